// SPP, the sparsity-preserving adapter (Lu et al. 2024), at a pruned linear projection.
//
// For the frozen pruned weight W̃ ∈ R^{m×n} (m outputs, n inputs) and trainable W_α ∈ R^{r×n},
// W_β ∈ R^{m×1}:
//   W̃' = W̃ ⊙ R(W_α) ⊙ W_β,   R(W_α) = repeat_interleave(W_α, m/r, dim 0)
//   y  = x·W̃ᵀ + s·dropout(x)·W̃'ᵀ,   s = alpha / r
// W_α starts Kaiming-uniform and W_β at zero, so training starts exactly at the pruned model
// (as the official code). W̃' is W̃ times something, so a zero of W̃ stays zero in the merged
// weight W̃ + s·W̃' by construction, bit for bit.
//
// Two forms of the same function (config adapter.spp.form):
//   effective  without dropout, one product with W_eff = W̃ ⊙ (1 + s·R(W_α)·W_β)  (m×n extra)
//   blocked    the paper's eq. 7: for each of the r row blocks b, β_b ⊙ ((x ⊙ α_b)·W̃_bᵀ),
//              never materialising an m×n matrix (r products of m/r rows each)
// With dropout active (training, dropout > 0) the effective form takes the two-product path.
//
// Under tensor parallelism (DESIGN.md §4): on a column-parallel projection W_β is split with the
// rows and W_α replicated, its blocks indexed by global row; on a row-parallel one W_α is split
// with the columns and W_β replicated. Each shard's W̃ keeps its own zeros.
#pragma once

#include <torch/torch.h>

#include <string>

#include "adapters/method.h"
#include "model/hooks.h"

namespace spartan::adapters {

class SppLinear : public model::LinearAdapter {
 public:
  // `recompute_weight`: the effective form's products rebuild their m×n weight in the backward
  // pass (keeping only their input) instead of leaving autograd to keep it.
  SppLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha, double dropout,
            SppForm form, bool recompute_weight = true);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight) override;

  // s·W̃' for the frozen weight W̃ (m, n): what merging adds.
  torch::Tensor delta_weight(const torch::Tensor& weight) const;
  // W̃ + s·W̃', in W̃'s dtype: zeros of W̃ stay zeros.
  torch::Tensor merged_weight(const torch::Tensor& weight) const;
  torch::Tensor merged_weight(const torch::Tensor& W, bool) const override {
    return merged_weight(W);  // nothing to re-mask: W̃'s zeros are kept by construction
  }
  bool keeps_zero_pattern() const override { return true; }

  void shard(const model::TpSlice& slice) override;
  model::TpPlacement placement(const std::string& param) const override;

  torch::Tensor alpha_w;  // W_α (r, n)
  torch::Tensor beta_w;   // W_β (m, 1)
  double scale, dropout;
  SppForm form;
  bool recompute_weight;

 private:
  torch::Tensor expanded_alpha() const;  // R(W_α) for this rank's rows (m, n)
  torch::Tensor block_rows() const;      // the block of W_α each of this rank's rows takes
  int64_t rows_per_block_;               // m/r of the whole weight
  int64_t row_begin_ = 0;                // first global row this rank holds
  model::TpSlice slice_;
};

// "spp": merged into the base at the end of a run, every zero of the base kept.
class SppMethod : public ProjectionMethod {
 public:
  const char* name() const override { return "spp"; }
  const char* title() const override { return "SPP"; }
  const PeftRef* peft_ref() const override;
  Export exports() const override { return Export::merged_model; }
  std::shared_ptr<model::LinearAdapter> make_linear(const AdapterConfig& config, model::Proj p,
                                                    int64_t out, int64_t in) const override;
  bool sized_by_rank() const override { return true; }
  bool mergeable() const override { return true; }
  bool keeps_zero_pattern() const override { return true; }
  std::shared_ptr<const model::MethodCosts> costs(const AdapterConfig& config) const override;

 protected:
  int64_t formula(model::Proj, int64_t out, int64_t in, const AdapterConfig& c) const override {
    return c.r * in + out;
  }
  const char* formula_text() const override { return "L·Σ_targets (r·d_in + d_out)"; }
};

}  // namespace spartan::adapters
