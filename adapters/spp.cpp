#include "adapters/spp.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace spartan::adapters {

SppLinear::SppLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha,
                     double dropout_p, std::string form_)
    : scale(alpha / static_cast<double>(r)), dropout(dropout_p), form(std::move(form_)),
      rows_per_block_(out_features / r) {
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
  if (row_begin_ == 0 && beta_w.size(0) == alpha_w.size(0) * rows_per_block_)
    return alpha_w.repeat_interleave(rows_per_block_, 0);
  auto rows = torch::arange(row_begin_, row_begin_ + beta_w.size(0), torch::kInt64);
  return alpha_w.index_select(0, rows.div(rows_per_block_, "floor"));
}

void SppLinear::shard(const model::TpSlice& slice) {
  torch::NoGradGuard no_grad;
  slice_ = slice;
  if (slice.split == model::TpSplit::none) return;
  if (slice.holders > 1)
    throw UsageError("SPP on k or v with more TP ranks than KV heads", "[parallel] tp",
                     "use tp <= num_kv_heads, or leave k and v out of adapter.targets");
  if (slice.split == model::TpSplit::output) {
    beta_w.set_data(beta_w.narrow(0, slice.begin, slice.size()).clone());
    row_begin_ = slice.begin;
  } else {
    alpha_w.set_data(alpha_w.narrow(1, slice.begin, slice.size()).clone());
  }
}

model::TpPlacement SppLinear::placement(const std::string& param) const {
  using P = model::TpPlacement;
  if (slice_.split == model::TpSplit::none) return {};
  const bool column = slice_.split == model::TpSplit::output;
  if (param == "spp_beta") return column ? P{P::sharded, 0} : P{P::partial, 0};
  return column ? P{P::partial, 0} : P{P::sharded, 1};
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
  // blocked (eq. 7): rows of block b use α_b; Δy_b = β_b ⊙ ((x' ⊙ α_b)·W̃_bᵀ). This rank's
  // rows [row_begin, row_begin + m) may start and end inside a block.
  auto base = torch::linear(x, weight);
  auto xd = drop ? torch::dropout(xa, dropout, true) : xa;
  auto W = weight.to(alpha_w.scalar_type());
  const int64_t m = W.size(0), per = rows_per_block_;
  std::vector<torch::Tensor> parts;
  for (int64_t row = row_begin_; row < row_begin_ + m;) {
    const int64_t b = row / per, stop = std::min((b + 1) * per, row_begin_ + m);
    const int64_t local = row - row_begin_, n = stop - row;
    auto yb = torch::linear(xd * alpha_w[b], W.narrow(0, local, n));      // (B, T, n)
    parts.push_back(yb * beta_w.narrow(0, local, n).squeeze(1));
    row = stop;
  }
  auto delta = torch::cat(parts, -1) * scale;                               // (B, T, m)
  return (base + delta).to(base.scalar_type());
}

}  // namespace spartan::adapters
