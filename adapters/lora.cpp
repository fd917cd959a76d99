#include "adapters/lora.h"

#include <cmath>

#include "common/error.h"
#include "kernels/kernels.h"

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
  auto base = torch::linear(x, weight);  // (B, T, out)
  auto h = x.to(lora_A.scalar_type());
  if (dropout > 0) h = torch::dropout(h, dropout, is_training());
  auto delta = torch::linear(torch::linear(h, lora_A), lora_B) * scale;  // (B, T, out)
  return (base + delta).to(base.scalar_type());
}

torch::Tensor LoraLinear::delta_weight() const { return torch::matmul(lora_B, lora_A) * scale; }

torch::Tensor LoraLinear::merged_weight(const torch::Tensor& W, bool re_mask) const {
  torch::NoGradGuard no_grad;
  return merge_low_rank(W, delta_weight(), re_mask);
}

const PeftRef* LoraMethod::peft_ref() const {
  static const PeftRef row{"dense, low rank",   "none",     "reparametrisation",
                           "hidden states",     "parallel", "scaled addition",
                           "linear projections"};
  return &row;
}

std::shared_ptr<model::LinearAdapter> LoraMethod::make_linear(const AdapterConfig& c, model::Proj,
                                                              int64_t out, int64_t in) const {
  return std::make_shared<LoraLinear>(in, out, c.r, c.alpha, c.dropout);
}

torch::Tensor merge_low_rank(const torch::Tensor& W, const torch::Tensor& delta, bool re_mask) {
  if (re_mask) return kernels::masked_merge(W, delta);
  return (W.to(torch::kFloat32) + delta).to(W.scalar_type());
}

void shard_low_rank(const model::TpSlice& slice, torch::Tensor& A, torch::Tensor& B) {
  torch::NoGradGuard no_grad;
  if (slice.split == model::TpSplit::none) return;
  if (slice.holders > 1)
    throw UsageError("LoRA/SoRA on k or v with more TP ranks than KV heads", "[parallel] tp",
                     "use tp <= num_kv_heads, or leave k and v out of adapter.targets");
  if (slice.split == model::TpSplit::output)
    B.set_data(B.narrow(0, slice.begin, slice.size()).clone());
  else
    A.set_data(A.narrow(1, slice.begin, slice.size()).clone());
}

model::TpPlacement low_rank_placement(const model::TpSlice& slice, const std::string& param) {
  using P = model::TpPlacement;
  if (slice.split == model::TpSplit::none) return {};
  const bool column = slice.split == model::TpSplit::output;
  if (param == "lora_B") return column ? P{P::sharded, 0} : P{P::partial, 0};
  if (param == "lora_A") return column ? P{P::partial, 0} : P{P::sharded, 1};
  return {P::partial, 0};  // SoRA's gate: replicated, each rank's gradient a partial sum
}

void LoraLinear::shard(const model::TpSlice& slice) {
  slice_ = slice;
  shard_low_rank(slice, lora_A, lora_B);
}

model::TpPlacement LoraLinear::placement(const std::string& param) const {
  return low_rank_placement(slice_, param);
}

namespace {

class LowRankCosts : public model::MethodCosts {
 public:
  LowRankCosts(const char* name, bool gated) : name_(name), gated_(gated) {}
  std::string name() const override { return name_; }
  // A (r × in), B (out × r): a column-parallel projection splits B, a row-parallel one A; SoRA's
  // gate (r) is replicated.
  model::ProjEntries entries(const model::ProjShape& p, double r) const override {
    model::ProjEntries e;
    e.split = r * (p.column ? p.out : p.in);
    e.whole = r * (p.column ? p.in : p.out);
    if (gated_) {
      e.whole += r;
      e.gates = r;
    }
    return e;
  }
  // x·Aᵀ in fp32 (and SoRA's gated copy), and the module's input: dropout's output and mask,
  // else the fp32 copy of a bf16 input (each module makes its own).
  double kept(const model::ProjShape&, double r, const model::ProjActivations& a) const override {
    return 4 * a.tokens * r * (gated_ ? 2 : 1) +
           (a.dropped > 0 ? a.dropped : a.copy * a.tokens * a.in_local);
  }
  // x·Aᵀ·Bᵀ: two FLOPs an entry a token, in each of the three passes.
  model::MethodFlops flops(const model::StepSizes& step) const override {
    const double low_rank = 2 * step.tokens * step.trainable;
    return {low_rank, low_rank, low_rank};
  }

 private:
  const char* name_;
  bool gated_;
};

}  // namespace

std::shared_ptr<const model::MethodCosts> low_rank_costs(const char* name, bool gated) {
  return std::make_shared<LowRankCosts>(name, gated);
}

std::shared_ptr<const model::MethodCosts> LoraMethod::costs(const AdapterConfig&) const {
  return low_rank_costs(name(), false);
}

}  // namespace spartan::adapters
