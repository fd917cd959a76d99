// CPU reference of SPP's effective weight and its gradients: the torch expressions SPP's rebuilt
// product used before kernels/ (adapters/spp.cpp), operation for operation.
#include "kernels/kernels.h"

namespace spartan::kernels {

torch::Tensor spp_row_blocks(int64_t m, int64_t rows_per_block, int64_t row_begin,
                             const torch::Device& device) {
  return torch::arange(row_begin, row_begin + m, torch::dtype(torch::kInt64).device(device))
      .div(rows_per_block, "floor");
}

namespace cpu {

torch::Tensor spp_effective_weight(const torch::Tensor& weight, const torch::Tensor& alpha,
                                   const torch::Tensor& beta, int64_t rows_per_block,
                                   int64_t row_begin, double scale, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  const auto rows = spp_row_blocks(weight.size(0), rows_per_block, row_begin, weight.device());
  auto w = alpha.index_select(0, rows).mul_(scale).mul_(beta);  // (s·α)·β
  return w.add_(1.0).mul_(weight.to(alpha.scalar_type())).to(dtype);
}

SppGrads spp_weight_grads(const torch::Tensor& grad, const torch::Tensor& weight,
                          const torch::Tensor& alpha, const torch::Tensor& beta,
                          int64_t rows_per_block, int64_t row_begin, double scale) {
  torch::NoGradGuard no_grad;
  const auto rows = spp_row_blocks(weight.size(0), rows_per_block, row_begin, weight.device());
  auto H = grad.to(alpha.scalar_type()).mul_(weight.to(alpha.scalar_type()));
  SppGrads out;
  out.beta = (H * alpha.index_select(0, rows).mul_(scale)).sum(1, /*keepdim=*/true);
  H.mul_(beta).mul_(scale);
  out.alpha = torch::zeros_like(alpha).index_add_(0, rows, H);
  return out;
}

}  // namespace cpu
}  // namespace spartan::kernels
