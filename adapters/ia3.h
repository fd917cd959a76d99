// (IA)^3 (Liu et al. 2022) at a linear projection, as HF PEFT's IA3Config: a learned vector
// rescales the projection's output (k, v: y = (x·Wᵀ) ⊙ l), or, for a feed-forward module
// (down_proj: the FFN intermediate), its input (y = (x ⊙ l)·Wᵀ). Initialised to ones, so training
// starts at the base. Merging scales W's rows (output) or columns (input): W ⊙ l either way, with
// l shaped (out, 1) or (1, in) as PEFT stores it.
#pragma once

#include <torch/torch.h>

#include "adapters/method.h"
#include "model/hooks.h"

namespace spartan::adapters {

class Ia3Linear : public model::LinearAdapter {
 public:
  Ia3Linear(int64_t in_features, int64_t out_features, bool feedforward);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight) override;
  torch::Tensor merged_weight(const torch::Tensor& weight) const;  // W ⊙ l
  torch::Tensor merged_weight(const torch::Tensor& W, bool) const override {
    return merged_weight(W);  // W's zeros stay zeros (an entry of l at 0 adds some)
  }

  // l is split with W's outputs (column-parallel, output scaling) or inputs (row-parallel,
  // input scaling); otherwise it is replicated and its gradient summed over TP.
  void shard(const model::TpSlice& slice) override;
  model::TpPlacement placement(const std::string& param) const override;

  torch::Tensor ia3_l;  // (out, 1), or (1, in) for a feed-forward module
  bool feedforward;

 private:
  model::TpSlice slice_;
};

// "ia3": saved in PEFT's layout; folds into the base as W ⊙ l.
class Ia3Method : public ProjectionMethod {
 public:
  const char* name() const override { return "ia3"; }
  const char* title() const override { return "(IA)^3"; }
  const PeftRef* peft_ref() const override;
  Export exports() const override { return Export::peft_ia3; }
  std::shared_ptr<model::LinearAdapter> make_linear(const AdapterConfig& config, model::Proj p,
                                                    int64_t out, int64_t in) const override;
  bool mergeable() const override { return true; }
  std::shared_ptr<const model::MethodCosts> costs(const AdapterConfig& config) const override;
  // Counted on PEFT's LLaMA targets (k, v, down) where the configuration is another method's.
  ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const override;

 protected:
  int64_t formula(model::Proj p, int64_t out, int64_t in, const AdapterConfig&) const override {
    return p == model::Proj::down ? in : out;
  }
  const char* formula_text() const override { return "L·Σ_targets d_out (d_in for down)"; }
};

}  // namespace spartan::adapters
