// The SoRA gates' own optimizer, as the official code's SparseAdamW (src/sparse_optimizer.py):
// a bias-corrected AdamW update without weight decay (eps 1e-6), then a threshold step with ξ.
//
//   official   the three in-place lines of the official code, run one after another:
//                g[g > ξ] -= ξ;  g[g < −ξ] += ξ;  g[|g| < ξ] = 0
//              so entries with |g| < 2ξ end at 0 and larger ones shrink by ξ
//   soft       the textbook soft threshold: g ← sign(g)·max(|g| − ξ, 0)
//   lr_scaled  soft with ξ·lr (the paper's η_t·λ)
// The loss carries λ₁·Σ|g| / (number of gate entries) as well (l1_penalty()).
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/optimizer.h"

namespace spartan::trainer {

void threshold_gates(torch::Tensor& g, double xi, double lr, const std::string& kind);

class GateOptimizer {
 public:
  GateOptimizer(model::NamedTensors gates, double xi, std::string kind, double beta1,
                double beta2);
  void step(double lr);  // AdamW (no decay, eps 1e-6), then the threshold
  void zero_grad() { adam_.zero_grad(); }
  void set_xi(double xi) { xi_ = xi; }
  AdamW& adam() { return adam_; }
  int64_t nonzero() const;  // non-zero gate entries over all modules
  int64_t total() const;

 private:
  AdamW adam_;
  double xi_;
  std::string kind_;
};

// λ₁ · Σ|g| / (number of gate entries), summed over all gates.
torch::Tensor l1_penalty(const model::NamedTensors& gates, double lambda1);

}  // namespace spartan::trainer
