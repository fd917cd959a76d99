// LoRA (Hu et al. 2021) at a linear projection, as HF PEFT's LoraConfig computes it:
//   y = x·Wᵀ + s · dropout(x)·Aᵀ·Bᵀ,   A ∈ R^{r×in} Kaiming-uniform(a=√5), B ∈ R^{out×r} zeros,
//   s = alpha / r.
// B starts at zero, so training starts exactly at the base model. The adapter keeps its own
// dtype (fp32) whatever the base's; the sum is taken in the wider type and cast back, as PEFT.
#pragma once

#include <torch/torch.h>

#include "model/hooks.h"

namespace spartan::adapters {

class LoraLinear : public model::LinearAdapter {
 public:
  LoraLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha, double dropout);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight) override;

  // Δ = s·B·A, the (out, in) update that merging adds to the base weight.
  torch::Tensor delta_weight() const;

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

}  // namespace spartan::adapters
