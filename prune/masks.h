// The pruning criteria on one weight matrix W (out, in), in fp32. A mask is a bool tensor of W's
// shape, true where the weight is pruned (set to zero).
//
// Patterns: unstructured at a ratio, or N:M along the input dimension: in every group of M
// consecutive inputs of a row, N weights stay and M − N are pruned (2:4 keeps 2 of 4).
//   magnitude  score |W|; unstructured: the lowest fraction of the whole matrix
//   Wanda      score |W_ij|·‖X_j‖₂ over the calibration tokens (Sun et al. 2023); unstructured:
//              the lowest fraction of each output row, the comparison group of the paper
//   SparseGPT  OBS reconstruction column by column with the inverse Hessian of the calibration
//              inputs (Frantar & Alistarh 2023); the mask is chosen per block of columns
#pragma once

#include <torch/torch.h>

#include <string>

namespace spartan::prune {

struct Pattern {
  int64_t n = 0, m = 0;  // N kept of every M; m == 0: unstructured
  bool nm() const { return m > 0; }
  std::string str() const;
};
Pattern parse_pattern(const std::string& text);  // "unstructured" or "N:M"; throws UsageError

// Prunes the m − n lowest scores of every group of m along dim 1.
torch::Tensor nm_mask(const torch::Tensor& scores, Pattern p);
// Prunes exactly floor(numel · sparsity) lowest scores of each row (per_row) or of the matrix.
torch::Tensor ratio_mask(const torch::Tensor& scores, double sparsity, bool per_row);

torch::Tensor magnitude_mask(const torch::Tensor& W, double sparsity, Pattern p);

// x_sq_sum: (in,) sums of x_j² over the calibration tokens.
torch::Tensor wanda_scores(const torch::Tensor& W, const torch::Tensor& x_sq_sum);
torch::Tensor wanda_mask(const torch::Tensor& W, const torch::Tensor& x_sq_sum, double sparsity,
                         Pattern p);

// H: (in, in) Σ x xᵀ over the calibration tokens. Updates W in place (pruned weights become
// exactly 0, the rest compensate) and returns the mask.
torch::Tensor sparsegpt_prune(torch::Tensor& W, torch::Tensor H, double sparsity, Pattern p,
                              int64_t blocksize, double percdamp);

// Checks a pruned matrix: fraction of zeros, and whether every group obeys the N:M pattern.
struct MaskCheck {
  double sparsity = 0;
  bool pattern_ok = true;
};
MaskCheck check_pattern(const torch::Tensor& W, Pattern p);

}  // namespace spartan::prune
