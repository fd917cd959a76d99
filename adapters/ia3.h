// (IA)^3 (Liu et al. 2022) at a linear projection, as HF PEFT's IA3Config: a learned vector
// rescales the projection's output (k, v: y = (x·Wᵀ) ⊙ l), or, for a feed-forward module
// (down_proj: the FFN intermediate), its input (y = (x ⊙ l)·Wᵀ). Initialised to ones, so training
// starts at the base. Merging scales W's rows (output) or columns (input): W ⊙ l either way, with
// l shaped (out, 1) or (1, in) as PEFT stores it.
#pragma once

#include <torch/torch.h>

#include "model/hooks.h"

namespace spartan::adapters {

class Ia3Linear : public model::LinearAdapter {
 public:
  Ia3Linear(int64_t in_features, int64_t out_features, bool feedforward);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight) override;
  torch::Tensor merged_weight(const torch::Tensor& weight) const;  // W ⊙ l

  // l is split with W's outputs (column-parallel, output scaling) or inputs (row-parallel,
  // input scaling); otherwise it is replicated and its gradient summed over TP.
  void shard(const model::TpSlice& slice) override;
  model::TpPlacement placement(const std::string& param) const override;

  torch::Tensor ia3_l;  // (out, 1), or (1, in) for a feed-forward module
  bool feedforward;

 private:
  model::TpSlice slice_;
};

}  // namespace spartan::adapters
