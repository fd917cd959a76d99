// AdamW with decoupled weight decay, in one of two forms that differ where ε matters:
//   torch  step for step as torch.optim.AdamW (single-tensor path):
//            p ← p·(1 − lr·wd)
//            m ← β₁m + (1−β₁)g;   v ← β₂v + (1−β₂)g²
//            p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)
//   hf     as the old transformers.AdamW (correct_bias=True), which SoRA's official
//          SparseAdamW extends: ε is added to the *uncorrected* √v and both bias corrections
//          go into the step size; decay after the update:
//            m ← β₁m + (1−β₁)g;   v ← β₂v + (1−β₂)g²
//            p ← p − lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε);   p ← p − lr·wd·p
//          With gradients near ε·√(1−β₂ᵗ) the two take visibly different steps.
// Its state is plain named tensors so checkpoints can shard and reload it.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/weights.h"

namespace spartan::trainer {

struct AdamWOptions {
  enum class Form { torch, hf };
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  Form form = Form::torch;
};

class AdamW {
 public:
  // `decay[i]` says whether params[i] gets weight decay.
  AdamW(model::NamedTensors params, std::vector<bool> decay, AdamWOptions options);

  // One update with learning rate `lr` from each parameter's .grad(); parameters without a
  // gradient are left alone (their step count still advances, as all share one step).
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return step_; }
  // Restores moments and step count (from a checkpoint); shapes must match the parameters.
  void load_state(const std::vector<torch::Tensor>& exp_avg,
                  const std::vector<torch::Tensor>& exp_avg_sq, int64_t steps);

  const model::NamedTensors& params() const { return params_; }
  const std::vector<torch::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<torch::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }

 private:
  model::NamedTensors params_;
  std::vector<bool> decay_;
  AdamWOptions opt_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

// Weight decay on matrices only (not on norms, gates or other vectors), as HF Trainer leaves
// out biases and norm weights.
std::vector<bool> decay_matrices(const model::NamedTensors& params);

// Global L2 norm of the gradients; scales them by max_norm / (norm + 1e-6) when that is < 1,
// as torch.nn.utils.clip_grad_norm_. max_norm <= 0 only measures. Returns the norm before.
double clip_grad_norm(const model::NamedTensors& params, double max_norm);

}  // namespace spartan::trainer
