// The SoRA gates' own optimizer, as the official code's SparseAdamW (src/sparse_optimizer.py):
// a bias-corrected AdamW update without weight decay (eps 1e-6) in the old transformers form
// (`[adapter.sora] adam = "hf"`, the default; "torch" uses torch.optim.AdamW's form, see
// optimizer.h), then a threshold step with ξ.
//
//   official   the three in-place lines of the official code, run one after another:
//                g[g > ξ] -= ξ;  g[g < −ξ] += ξ;  g[|g| < ξ] = 0
//              so entries with |g| < 2ξ end at 0 and larger ones shrink by ξ
//   soft       the textbook soft threshold: g ← sign(g)·max(|g| − ξ, 0)
//   lr_scaled  soft with ξ·lr (the paper's η_t·λ)
// The loss carries λ₁·Σ|g| / (number of gate entries) as well (l1_penalty()).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "trainer/optimizer.h"

namespace spartan::trainer {

void threshold_gates(torch::Tensor& g, double xi, double lr, GateThreshold kind);

class GateOptimizer {
 public:
  GateOptimizer(model::NamedTensors gates, double xi, GateThreshold kind, double beta1,
                double beta2, AdamWOptions::Form form = AdamWOptions::Form::hf);
  void step(double lr);  // AdamW (no decay, eps 1e-6), then the threshold
  void zero_grad() { adam_.zero_grad(); }
  void set_xi(double xi) { xi_ = xi; }
  AdamW& adam() { return adam_; }
  int64_t nonzero() const;  // non-zero gate entries over all modules
  int64_t total() const;

 private:
  AdamW adam_;
  double xi_;
  GateThreshold kind_;
};

// λ₁ · Σ|g| / (number of gate entries), summed over all gates.
torch::Tensor l1_penalty(const model::NamedTensors& gates, double lambda1);

// The ξ schedule of the SoRA paper (§3.3), built as the official code builds it from λ₂ to
// max_lambda in lambda_num values:
//   linear      linspace(λ₂, max, n)
//   log_linear  log(linspace(e^λ₂, e^max, n))
//   exp_linear  exp(linspace(log λ₂, log max, n))
// The official code trains once per value; here the run's steps are split into n equal phases,
// phase i thresholding with the i-th value. At the end of each phase the trainer logs train and
// held-out loss against the non-zero gate entries (the memorisation/generalisation curve).
class XiSchedule {
 public:
  // schedule none: one phase with ξ = λ₂.
  XiSchedule(XiScheduleKind schedule, double lambda2, double max_lambda, int64_t lambda_num,
             int64_t total_steps);
  const std::vector<double>& values() const { return values_; }
  double xi(int64_t step) const;        // ξ used by optimizer step `step` (0-based)
  bool phase_ends(int64_t step) const;  // whether step `step` is the last of its phase
  bool active() const { return values_.size() > 1; }

 private:
  std::vector<double> values_;
  int64_t phase_steps_ = 1, total_steps_ = 1;
};

}  // namespace spartan::trainer
