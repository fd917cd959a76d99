// Picks each kernel's implementation by the tensors' device.
#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

namespace spartan::kernels {

#ifdef SPARTAN_KERNELS_CUDA
namespace cuda_tensors {  // dispatch_cuda.cpp
torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta);
torch::Tensor spp_effective_weight(const torch::Tensor& weight, const torch::Tensor& alpha,
                                   const torch::Tensor& beta, int64_t rows_per_block,
                                   int64_t row_begin, double scale, torch::Dtype dtype);
SppGrads spp_weight_grads(const torch::Tensor& grad, const torch::Tensor& weight,
                          const torch::Tensor& alpha, const torch::Tensor& beta,
                          int64_t rows_per_block, int64_t row_begin, double scale);
}  // namespace cuda_tensors
bool cuda_compiled() { return true; }
#else
bool cuda_compiled() { return false; }
#endif

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("kernels: " + what);
}

#ifndef SPARTAN_KERNELS_CUDA
[[noreturn]] void no_cuda(const char* kernel) {
  throw std::runtime_error(std::string("kernels: ") + kernel + " got CUDA tensors, but this " +
                           "binary was built without CUDA code (SPARTAN_CUDA=OFF)");
}
#endif

// fp32, bf16 or fp16; fp64 too where the tensors are on the CPU (the reference is torch's).
bool floating(torch::Dtype t, const torch::Tensor& on) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16 ||
         (t == torch::kFloat64 && !on.is_cuda());
}

// The shapes, dtypes and devices SPP's kernels take (kernels.h).
void check_spp(const char* kernel, const torch::Tensor& weight, const torch::Tensor& alpha,
               const torch::Tensor& beta, int64_t rows_per_block, int64_t row_begin) {
  const std::string k = kernel;
  require(weight.dim() == 2 && alpha.dim() == 2 && beta.dim() == 2, k + ": 2-D tensors expected");
  require(floating(weight.scalar_type(), weight), k + ": the weight must be fp32, bf16 or fp16");
  const auto masters = alpha.scalar_type();
  require(masters == beta.scalar_type() &&
              (masters == torch::kFloat32 || (masters == torch::kFloat64 && !alpha.is_cuda())),
          k + ": alpha and beta must be fp32");
  require(alpha.size(1) == weight.size(1) && beta.size(0) == weight.size(0) && beta.size(1) == 1,
          k + ": alpha (r, n) and beta (m, 1) must fit the weight (m, n)");
  require(rows_per_block > 0 && row_begin >= 0 &&
              (weight.size(0) == 0 ||
               (row_begin + weight.size(0) - 1) / rows_per_block < alpha.size(0)),
          k + ": the weight's rows need blocks of alpha it does not have");
  require(alpha.device() == weight.device() && beta.device() == weight.device(),
          k + ": tensors on different devices");
}

}  // namespace

torch::Tensor spp_effective_weight(const torch::Tensor& weight, const torch::Tensor& alpha,
                                   const torch::Tensor& beta, int64_t rows_per_block,
                                   int64_t row_begin, double scale, torch::Dtype dtype) {
  check_spp("spp_effective_weight", weight, alpha, beta, rows_per_block, row_begin);
  require(floating(dtype, weight), "spp_effective_weight: the result must be fp32, bf16 or fp16");
  if (weight.is_cuda()) {
#ifdef SPARTAN_KERNELS_CUDA
    return cuda_tensors::spp_effective_weight(weight, alpha, beta, rows_per_block, row_begin, scale,
                                              dtype);
#else
    no_cuda("spp_effective_weight");
#endif
  }
  return cpu::spp_effective_weight(weight, alpha, beta, rows_per_block, row_begin, scale, dtype);
}

SppGrads spp_weight_grads(const torch::Tensor& grad, const torch::Tensor& weight,
                          const torch::Tensor& alpha, const torch::Tensor& beta,
                          int64_t rows_per_block, int64_t row_begin, double scale) {
  check_spp("spp_weight_grads", weight, alpha, beta, rows_per_block, row_begin);
  require(grad.sizes() == weight.sizes() && floating(grad.scalar_type(), grad) &&
              grad.device() == weight.device(),
          "spp_weight_grads: the gradient must be a floating tensor shaped as the weight");
  if (weight.is_cuda()) {
#ifdef SPARTAN_KERNELS_CUDA
    return cuda_tensors::spp_weight_grads(grad, weight, alpha, beta, rows_per_block, row_begin,
                                          scale);
#else
    no_cuda("spp_weight_grads");
#endif
  }
  return cpu::spp_weight_grads(grad, weight, alpha, beta, rows_per_block, row_begin, scale);
}

void sora_threshold_(torch::Tensor& gate, double t, GateThresholdForm form) {
  require(gate.is_floating_point(), "sora_threshold_: the gate must be a floating tensor");
  require(t >= 0, "sora_threshold_: the threshold must not be negative");
  cpu::sora_threshold_(gate, t, form);  // on every device (kernels.h)
}

torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta) {
  require(base.sizes() == delta.sizes(), "masked_merge: base and delta differ in shape");
  require(base.device() == delta.device(), "masked_merge: base and delta on different devices");
  const auto t = base.scalar_type();
  require(t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16,
          "masked_merge: the base must be fp32, bf16 or fp16");
  if (base.is_cuda()) {
#ifdef SPARTAN_KERNELS_CUDA
    return cuda_tensors::masked_merge(base, delta);
#else
    no_cuda("masked_merge");
#endif
  }
  return cpu::masked_merge(base, delta);
}

}  // namespace spartan::kernels
