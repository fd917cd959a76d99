#include "adapters/lora.h"

#include <cmath>

namespace spartan::adapters {

LoraLinear::LoraLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha,
                       double dropout_p)
    : scale(alpha / static_cast<double>(r)), dropout(dropout_p) {
  lora_A = register_parameter("lora_A", torch::empty({r, in_features}));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, r}));
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(lora_A, std::sqrt(5.0));
}

torch::Tensor LoraLinear::forward(const torch::Tensor& x, const torch::Tensor& weight) {
  auto base = torch::linear(x, weight);                              // (B, T, out)
  auto h = x.to(lora_A.scalar_type());
  if (dropout > 0) h = torch::dropout(h, dropout, is_training());
  auto delta = torch::linear(torch::linear(h, lora_A), lora_B) * scale;  // (B, T, out)
  return (base + delta).to(base.scalar_type());
}

torch::Tensor LoraLinear::delta_weight() const { return torch::matmul(lora_B, lora_A) * scale; }

}  // namespace spartan::adapters
