// LoRA (Hu et al. 2021) at a linear projection, as HF PEFT's LoraConfig computes it:
//   y = x·Wᵀ + s · dropout(x)·Aᵀ·Bᵀ,   A ∈ R^{r×in} Kaiming-uniform(a=√5), B ∈ R^{out×r} zeros,
//   s = alpha / r.
// B starts at zero, so training starts exactly at the base model. The adapter keeps its own
// dtype (fp32) whatever the base's; the sum is taken in the wider type and cast back, as PEFT.
#pragma once

#include <torch/torch.h>

#include "adapters/method.h"
#include "model/hooks.h"

namespace spartan::adapters {

class LoraLinear : public model::LinearAdapter {
 public:
  LoraLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha, double dropout);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight) override;

  // Δ = s·B·A, the (out, in) update that merging adds to the base weight.
  torch::Tensor delta_weight() const;
  // W + Δ; with re_mask W's zeros imposed again (LoRA*).
  torch::Tensor merged_weight(const torch::Tensor& W, bool re_mask) const override;

  // Column-parallel: B split by rows, A replicated (partial gradient). Row-parallel: A split by
  // columns, B replicated (partial gradient); the partial output joins the base's before the
  // projection's all-reduce.
  void shard(const model::TpSlice& slice) override;
  model::TpPlacement placement(const std::string& param) const override;

  torch::Tensor lora_A;  // (r, in)
  torch::Tensor lora_B;  // (out, r)
  double scale;
  double dropout;

 private:
  model::TpSlice slice_;
};

// The TP rules shared by LoRA and SoRA (W_d = A, W_u = B; SoRA's gate is replicated).
void shard_low_rank(const model::TpSlice& slice, torch::Tensor& A, torch::Tensor& B);
model::TpPlacement low_rank_placement(const model::TpSlice& slice, const std::string& param);
// W + delta in W's dtype (the sum taken in fp32); with re_mask W's zeros imposed again.
torch::Tensor merge_low_rank(const torch::Tensor& W, const torch::Tensor& delta, bool re_mask);

// "lora": saved in PEFT's layout; with adapter.merge = "masked" also merged with the base's zeros
// imposed again (LoRA*).
class LoraMethod : public ProjectionMethod {
 public:
  const char* name() const override { return "lora"; }
  const char* title() const override { return "LoRA"; }
  const PeftRef* peft_ref() const override;
  Export exports() const override { return Export::peft_lora; }
  std::shared_ptr<model::LinearAdapter> make_linear(const AdapterConfig& config, model::Proj p,
                                                    int64_t out, int64_t in) const override;
  bool sized_by_rank() const override { return true; }
  bool mergeable() const override { return true; }
  bool masked_merge(const AdapterConfig& config) const override {
    return config.merge == MergeForm::masked;
  }
  std::shared_ptr<const model::MethodCosts> costs(const AdapterConfig& config) const override;

 protected:
  int64_t formula(model::Proj, int64_t out, int64_t in, const AdapterConfig& c) const override {
    return c.r * (in + out);
  }
  const char* formula_text() const override { return "L·Σ_targets r(d_in + d_out)"; }
};

// LoRA's costs for `spartan plan`; `gated`: SoRA's (a gate a rank, and the gated copy of x·Aᵀ).
std::shared_ptr<const model::MethodCosts> low_rank_costs(const char* name, bool gated);

}  // namespace spartan::adapters
