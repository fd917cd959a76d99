#include "adapters/spp.h"

#include <cmath>

#include "common/error.h"

namespace spartan::adapters {

SppLinear::SppLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha,
                     double dropout_p, std::string form_)
    : scale(alpha / static_cast<double>(r)), dropout(dropout_p), form(std::move(form_)) {
  if (out_features % r != 0)
    throw UsageError("SPP rank " + std::to_string(r) + " does not divide the " +
                         std::to_string(out_features) + " outputs of a target projection",
                     "[adapter] r", "choose r dividing every target's output size");
  alpha_w = register_parameter("spp_alpha", torch::empty({r, in_features}));
  beta_w = register_parameter("spp_beta", torch::zeros({out_features, 1}));
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(alpha_w, std::sqrt(5.0));
}

torch::Tensor SppLinear::expanded_alpha() const {
  return alpha_w.repeat_interleave(beta_w.size(0) / alpha_w.size(0), 0);
}

torch::Tensor SppLinear::delta_weight(const torch::Tensor& weight) const {
  return weight.to(alpha_w.scalar_type()) * expanded_alpha() * beta_w * scale;
}

torch::Tensor SppLinear::merged_weight(const torch::Tensor& weight) const {
  torch::NoGradGuard no_grad;
  return (weight.to(alpha_w.scalar_type()) + delta_weight(weight)).to(weight.scalar_type());
}

torch::Tensor SppLinear::forward(const torch::Tensor& x, const torch::Tensor& weight) {
  const bool drop = dropout > 0 && is_training();
  const auto dtype = x.scalar_type();
  auto xa = x.to(alpha_w.scalar_type());
  if (form == "effective") {
    auto W = weight.to(alpha_w.scalar_type());
    if (!drop)  // one product with W_eff = W̃ ⊙ (1 + s·R(W_α)·W_β)
      return torch::linear(xa, W * (1.0 + scale * expanded_alpha() * beta_w)).to(dtype);
    auto base = torch::linear(x, weight);
    auto delta = torch::linear(torch::dropout(xa, dropout, true), delta_weight(weight));
    return (base + delta).to(base.scalar_type());
  }
  // blocked (eq. 7): rows of block b use α_b; Δy_b = β_b ⊙ ((x' ⊙ α_b)·W̃_bᵀ)
  auto base = torch::linear(x, weight);
  auto xd = drop ? torch::dropout(xa, dropout, true) : xa;
  auto W = weight.to(alpha_w.scalar_type());
  const int64_t r = alpha_w.size(0), rows = W.size(0) / r;
  std::vector<torch::Tensor> parts;
  parts.reserve(r);
  for (int64_t b = 0; b < r; ++b) {
    auto rows_b = W.narrow(0, b * rows, rows);                              // (m/r, n)
    auto yb = torch::linear(xd * alpha_w[b], rows_b);                       // (B, T, m/r)
    parts.push_back(yb * beta_w.narrow(0, b * rows, rows).squeeze(1));
  }
  auto delta = torch::cat(parts, -1) * scale;                               // (B, T, m)
  return (base + delta).to(base.scalar_type());
}

}  // namespace spartan::adapters
