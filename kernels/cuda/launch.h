// Entry points of the .cu files: raw pointers, element counts and a stream, so that nvcc never
// compiles torch's headers (kernels/dispatch_cuda.cpp converts tensors and checks errors).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace spartan::kernels::cuda {

enum class ElementType { f32, bf16, f16 };

// out = base == 0 ? 0 : base + delta (fp32 sum, rounded once to the base's type); n entries,
// all contiguous on the current device. `sms`: the device's multiprocessor count.
cudaError_t masked_merge(const void* base, const float* delta, void* out, int64_t n,
                         ElementType type, int sms, cudaStream_t stream);

// SPP's effective weight (kernels.h): out (m, n) of type `out_type` from weight (m, n) of
// `weight_type`, alpha (r', n) and beta (m) fp32; row i takes alpha's row
// (row_begin + i) / rows_per_block.
cudaError_t spp_effective_weight(const void* weight, ElementType weight_type, const float* alpha,
                                 const float* beta, void* out, ElementType out_type, int64_t m,
                                 int64_t n, int64_t rows_per_block, int64_t row_begin, float scale,
                                 int sms, cudaStream_t stream);

// Its gradients (kernels.h): d_alpha (r', n) and d_beta (m) fp32, written whole, from grad
// (m, n) of `grad_type` and weight (m, n) of `weight_type`.
cudaError_t spp_weight_grads(const void* grad, ElementType grad_type, const void* weight,
                             ElementType weight_type, const float* alpha, const float* beta,
                             float* d_alpha, float* d_beta, int64_t m, int64_t n,
                             int64_t alpha_rows, int64_t rows_per_block, int64_t row_begin,
                             float scale, int sms, cudaStream_t stream);

}  // namespace spartan::kernels::cuda
