#include "adapters/spp.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "kernels/kernels.h"

namespace spartan::adapters {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The two products of SPP whose weight is built from W_α and W_β, as one autograd function that
// keeps only its inputs and rebuilds the m×n weight in the backward pass. Left to autograd, each
// product would keep R(W_α), the built weight and an fp32 copy of W̃ (m×n each) for every
// projection and micro-batch in flight: about 1.7 GB a layer for LLaMA-2-70B at TP 8, more than
// the layer's activations (spartan plan).
//
//   effective  y = x·W_effᵀ,  W_eff = W̃ ⊙ (1 + s·R(W_α) ⊙ W_β)
//   delta      y = x·W̃'ᵀ,     W̃'   = (W̃ ⊙ R(W_α) ⊙ W_β)·s      (dropout's second product)
// R(W_α) = W_α's rows repeated, row i of the weight taking block b(i). The effective form's
// weight and its gradients to W_α and W_β come from kernels/ (kernels::spp_effective_weight,
// kernels::spp_weight_grads: one pass each on a GPU, the torch expressions on the CPU); the
// delta form keeps the torch expressions, its m×n temporaries updated in place (the backward
// holds three: P, G and G ⊙ P, spartan plan's workspace). Either way each product and sum is the
// same IEEE operation on the same operands as the plain expression.

// W̃' with P = W̃ ⊙ R(W_α) kept for the backward pass.
struct DeltaWeight {
  DeltaWeight(const torch::Tensor& weight, const torch::Tensor& alpha, const torch::Tensor& rows,
              double s)
      : W(weight.to(alpha.scalar_type())), P(alpha.index_select(0, rows).mul_(W)), scale(s) {}
  torch::Tensor weight(const torch::Tensor& beta) const { return (P * beta).mul_(scale); }
  torch::Tensor W, P;
  double scale;
};

// The weight gradient of y = x·Wᵀ: dyᵀ·x over every token.
torch::Tensor weight_grad(const torch::Tensor& dy, const torch::Tensor& x) {
  return dy.reshape({-1, dy.size(-1)}).t().mm(x.reshape({-1, x.size(-1)}));
}

// The dtype a product of `x` runs in: autocast's where it is on, else the masters'.
torch::Dtype product_dtype(const torch::Tensor& x, const torch::Tensor& alpha) {
  const auto type = x.device().type();
  return at::autocast::is_autocast_enabled(type) ? at::autocast::get_autocast_dtype(type)
                                                 : alpha.scalar_type();
}

class RebuiltProduct : public torch::autograd::Function<RebuiltProduct> {
 public:
  // `delta`: the dropout path's second product W̃', else W_eff (built by kernels/: one pass on a
  // GPU, in the product's dtype).
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& alpha,
                               const torch::Tensor& beta, int64_t rows_per_block, int64_t row_begin,
                               double scale, bool delta) {
    ctx->save_for_backward({x, weight, alpha, beta});
    ctx->saved_data["rows_per_block"] = rows_per_block;
    ctx->saved_data["row_begin"] = row_begin;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["delta"] = delta;
    if (!delta)
      return torch::linear(
          x, kernels::spp_effective_weight(weight, alpha, beta, rows_per_block, row_begin, scale,
                                           product_dtype(x, alpha)));
    const auto rows =
        kernels::spp_row_blocks(weight.size(0), rows_per_block, row_begin, weight.device());
    return torch::linear(x, DeltaWeight(weight, alpha, rows, scale).weight(beta));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &alpha = saved[2], &beta = saved[3];
    const int64_t rows_per_block = ctx->saved_data["rows_per_block"].toInt();
    const int64_t row_begin = ctx->saved_data["row_begin"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool delta = ctx->saved_data["delta"].toBool();
    // Under a ComputeScope the forward product ran in the compute dtype, and dy arrives in it:
    // the two backward products run in it too, the element-wise work in the masters' dtype.
    const auto& dy = grads[0];
    const auto compute = dy.scalar_type();
    const bool weight_grads = ctx->needs_input_grad(2) || ctx->needs_input_grad(3);
    torch::Tensor dx, dalpha, dbeta;
    if (!delta) {
      if (ctx->needs_input_grad(0))
        dx = dy.matmul(kernels::spp_effective_weight(weight, alpha, beta, rows_per_block, row_begin,
                                                     scale, compute))
                 .to(x.scalar_type());
      if (weight_grads) {
        auto g = kernels::spp_weight_grads(weight_grad(dy, x.to(compute)), weight, alpha, beta,
                                           rows_per_block, row_begin, scale);
        dalpha = g.alpha;
        dbeta = g.beta;
      }
      return {dx, {}, dalpha, dbeta, {}, {}, {}, {}};
    }
    const auto rows =
        kernels::spp_row_blocks(weight.size(0), rows_per_block, row_begin, weight.device());
    const DeltaWeight b(weight, alpha, rows, scale);
    if (ctx->needs_input_grad(0)) dx = dy.matmul(b.weight(beta).to(compute)).to(x.scalar_type());
    if (weight_grads) {  // dL/dweight, then d(P·W_β)
      auto G = weight_grad(dy, x.to(compute)).to(alpha.scalar_type()).mul_(scale);
      dbeta = (G * b.P).sum(1, /*keepdim=*/true);
      dalpha = torch::zeros_like(alpha).index_add_(0, rows, G.mul_(beta).mul_(b.W));
    }
    return {dx, {}, dalpha, dbeta, {}, {}, {}, {}};
  }
};

}  // namespace

SppLinear::SppLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha,
                     double dropout_p, SppForm form_, bool recompute_weight_)
    : scale(alpha / static_cast<double>(r)),
      dropout(dropout_p),
      form(form_),
      recompute_weight(recompute_weight_),
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

torch::Tensor SppLinear::block_rows() const {
  return kernels::spp_row_blocks(beta_w.size(0), rows_per_block_, row_begin_, beta_w.device());
}

torch::Tensor SppLinear::expanded_alpha() const {
  if (row_begin_ == 0 && beta_w.size(0) == alpha_w.size(0) * rows_per_block_)
    return alpha_w.repeat_interleave(rows_per_block_, 0);
  return alpha_w.index_select(0, block_rows());
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

const PeftRef* SppMethod::peft_ref() const {
  static const PeftRef row{"base's zeros, row blocks",
                           "none",
                           "reparametrisation",
                           "hidden states",
                           "parallel",
                           "scaled addition",
                           "linear projections"};
  return &row;
}

std::shared_ptr<model::LinearAdapter> SppMethod::make_linear(const AdapterConfig& c, model::Proj,
                                                             int64_t out, int64_t in) const {
  return std::make_shared<SppLinear>(in, out, c.r, c.alpha, c.dropout, c.spp.form,
                                     c.spp.recompute_weight);
}

torch::Tensor SppLinear::merged_weight(const torch::Tensor& weight) const {
  torch::NoGradGuard no_grad;
  return (weight.to(alpha_w.scalar_type()) + delta_weight(weight)).to(weight.scalar_type());
}

torch::Tensor SppLinear::forward(const torch::Tensor& x, const torch::Tensor& weight) {
  const bool drop = dropout > 0 && is_training();
  const auto dtype = x.scalar_type();
  auto xa = x.to(alpha_w.scalar_type());
  if (form == SppForm::effective && recompute_weight) {
    if (!drop)  // one product with W_eff = W̃ ⊙ (1 + s·R(W_α)·W_β)
      return RebuiltProduct::apply(xa, weight, alpha_w, beta_w, rows_per_block_, row_begin_, scale,
                                   false)
          .to(dtype);
    auto base = torch::linear(x, weight);
    auto delta = RebuiltProduct::apply(torch::dropout(xa, dropout, true), weight, alpha_w, beta_w,
                                       rows_per_block_, row_begin_, scale, true);
    return (base + delta).to(base.scalar_type());
  }
  if (form == SppForm::effective) {  // the same products, the weights kept by autograd
    auto W = weight.to(alpha_w.scalar_type());
    if (!drop) return torch::linear(xa, W * (1.0 + scale * expanded_alpha() * beta_w)).to(dtype);
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
    auto yb = torch::linear(xd * alpha_w[b], W.narrow(0, local, n));  // (B, T, n)
    parts.push_back(yb * beta_w.narrow(0, local, n).squeeze(1));
    row = stop;
  }
  auto delta = torch::cat(parts, -1) * scale;  // (B, T, m)
  return (base + delta).to(base.scalar_type());
}

namespace {

class SppCosts : public model::MethodCosts {
 public:
  SppCosts(bool blocked, bool recompute_weight)
      : blocked_(blocked), recompute_weight_(recompute_weight) {}
  std::string name() const override { return "spp"; }
  // W_α (r × in), W_β (out × 1): a column-parallel projection splits W_β, a row-parallel W_α.
  model::ProjEntries entries(const model::ProjShape& p, double r) const override {
    model::ProjEntries e;
    e.split = p.column ? p.out : r * p.in;
    e.whole = p.column ? r * p.in : p.out;
    return e;
  }
  // The module's input (dropout's output and mask, else the fp32 copy of a bf16 input) and:
  //  effective form, W_eff rebuilt in the backward pass: nothing more (backward_workspace);
  //  effective form, W_eff kept: s·R(W_α) and W_eff (W̃ ⊙ R(W_α) and W̃' with dropout), m×n
  //    fp32 each, and an fp32 copy of a bf16 W̃;
  //  blocked form (plain autograd): x ⊙ α_b for each of the r blocks, each block's output and
  //    an fp32 copy of a bf16 W̃.
  double kept(const model::ProjShape&, double r, const model::ProjActivations& a) const override {
    const double input = a.dropped > 0 ? a.dropped : a.copy * a.tokens * a.in_local;
    if (blocked_)
      return 4 * a.tokens * a.in_local * r + input + 4 * a.tokens * a.out_local +
             a.copy * a.entries;
    if (recompute_weight_) return input;
    return 2 * 4 * a.entries + input + a.copy * a.entries;
  }
  // The effective form's backward rebuilds one projection at a time: W̃ in fp32 (a copy for
  // bf16), P = s·R(W_α), the weight's gradient G and G ⊙ P, m×n fp32 each.
  double backward_workspace(double entries, double base_bytes) const override {
    if (blocked_ || !recompute_weight_) return 0;
    return (3 + (base_bytes < 4 ? 1 : 0)) * 4 * entries;
  }
  // The effective weight's m×n gradient; with dropout the effective form multiplies twice
  // (x·W̃ᵀ and dropout(x)·W̃'ᵀ).
  model::MethodFlops flops(const model::StepSizes& step) const override {
    model::MethodFlops f;
    f.weight_grad = 2 * step.tokens * step.targeted;
    if (step.dropout && !blocked_) f.forward = f.backward = 2 * step.tokens * step.targeted;
    return f;
  }

 private:
  bool blocked_, recompute_weight_;
};

}  // namespace

std::shared_ptr<const model::MethodCosts> SppMethod::costs(const AdapterConfig& config) const {
  return std::make_shared<SppCosts>(config.spp.form == SppForm::blocked,
                                    config.spp.recompute_weight);
}

}  // namespace spartan::adapters
