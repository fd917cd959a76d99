#include "adapters/ia3.h"

namespace spartan::adapters {

Ia3Linear::Ia3Linear(int64_t in_features, int64_t out_features, bool feedforward_)
    : feedforward(feedforward_) {
  ia3_l = register_parameter("ia3_l", feedforward ? torch::ones({1, in_features})
                                                  : torch::ones({out_features, 1}));
}

torch::Tensor Ia3Linear::forward(const torch::Tensor& x, const torch::Tensor& weight) {
  auto l = ia3_l.view({-1});
  if (feedforward) return torch::linear((x * l).to(weight.scalar_type()), weight);
  auto base = torch::linear(x, weight);
  return (base * l).to(base.scalar_type());
}

torch::Tensor Ia3Linear::merged_weight(const torch::Tensor& weight) const {
  torch::NoGradGuard no_grad;
  return (weight.to(ia3_l.scalar_type()) * ia3_l).to(weight.scalar_type());
}

}  // namespace spartan::adapters
