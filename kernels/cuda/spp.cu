// CUDA kernels of SPP's effective weight and its gradients (kernels.h). Each product and sum is
// the reference's, rounded in fp32 in the same order (__fmul_rn and __fadd_rn keep nvcc from
// fusing them into FMAs), so the weight and dα equal the CPU reference bit for bit; dβ's row sums
// are ordered otherwise (a warp's partial sums), within fp32 rounding.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.h"

namespace spartan::kernels::cuda {
namespace {

int blocks_for(int64_t work, int per_block, int sms) {
  const int64_t wanted = (work + per_block - 1) / per_block;
  return static_cast<int>(wanted < 8LL * sms ? (wanted > 0 ? wanted : 1) : 8LL * sms);
}

// One row per block (grid-stride over rows), the threads along the row.
template <class TW, class TO>
__global__ void effective_weight_kernel(const TW* __restrict__ weight,
                                        const float* __restrict__ alpha,
                                        const float* __restrict__ beta, TO* __restrict__ out,
                                        int64_t m, int64_t n, int64_t rows_per_block,
                                        int64_t row_begin, float scale) {
  for (int64_t i = blockIdx.x; i < m; i += gridDim.x) {
    const float* a = alpha + ((row_begin + i) / rows_per_block) * n;
    const float b = beta[i];
    const TW* w = weight + i * n;
    TO* o = out + i * n;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      float v = __fmul_rn(__fmul_rn(a[j], scale), b);
      v = __fmul_rn(__fadd_rn(v, 1.0f), to_float(w[j]));
      o[j] = from_float<TO>(v);
    }
  }
}

// dβ: one warp per row, each lane summing its columns, then the warp's sum.
template <class TG, class TW>
__global__ void beta_grad_kernel(const TG* __restrict__ grad, const TW* __restrict__ weight,
                                 const float* __restrict__ alpha, float* __restrict__ d_beta,
                                 int64_t m, int64_t n, int64_t rows_per_block, int64_t row_begin,
                                 float scale) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; i < m;
       i += warps) {
    const float* a = alpha + ((row_begin + i) / rows_per_block) * n;
    float sum = 0.0f;
    for (int64_t j = lane; j < n; j += 32) {
      const float h = __fmul_rn(to_float(grad[i * n + j]), to_float(weight[i * n + j]));
      sum = __fadd_rn(sum, __fmul_rn(h, __fmul_rn(a[j], scale)));
    }
    for (int offset = 16; offset > 0; offset /= 2)
      sum = __fadd_rn(sum, __shfl_down_sync(0xffffffffu, sum, offset));
    if (lane == 0) d_beta[i] = sum;
  }
}

// dα: one thread per (block of W_α, column), summing that block's rows in order.
template <class TG, class TW>
__global__ void alpha_grad_kernel(const TG* __restrict__ grad, const TW* __restrict__ weight,
                                  const float* __restrict__ beta, float* __restrict__ d_alpha,
                                  int64_t m, int64_t n, int64_t alpha_rows, int64_t rows_per_block,
                                  int64_t row_begin, float scale) {
  const int64_t b = blockIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= alpha_rows || j >= n) return;
  int64_t first = b * rows_per_block - row_begin, last = first + rows_per_block;
  if (first < 0) first = 0;
  if (last > m) last = m;
  float sum = 0.0f;
  for (int64_t i = first; i < last; ++i) {
    const float h = __fmul_rn(to_float(grad[i * n + j]), to_float(weight[i * n + j]));
    sum = __fadd_rn(sum, __fmul_rn(__fmul_rn(h, beta[i]), scale));
  }
  d_alpha[b * n + j] = sum;
}

template <class TW, class TO>
cudaError_t launch_weight(const void* weight, const float* alpha, const float* beta, void* out,
                          int64_t m, int64_t n, int64_t rows_per_block, int64_t row_begin,
                          float scale, int sms, cudaStream_t stream) {
  effective_weight_kernel<TW, TO><<<blocks_for(m, 1, sms), 256, 0, stream>>>(
      static_cast<const TW*>(weight), alpha, beta, static_cast<TO*>(out), m, n, rows_per_block,
      row_begin, scale);
  return cudaGetLastError();
}

template <class TW>
cudaError_t dispatch_weight(ElementType out_type, const void* weight, const float* alpha,
                            const float* beta, void* out, int64_t m, int64_t n,
                            int64_t rows_per_block, int64_t row_begin, float scale, int sms,
                            cudaStream_t stream) {
  switch (out_type) {
    case ElementType::f32:
      return launch_weight<TW, float>(weight, alpha, beta, out, m, n, rows_per_block, row_begin,
                                      scale, sms, stream);
    case ElementType::bf16:
      return launch_weight<TW, __nv_bfloat16>(weight, alpha, beta, out, m, n, rows_per_block,
                                              row_begin, scale, sms, stream);
    case ElementType::f16:
      return launch_weight<TW, __half>(weight, alpha, beta, out, m, n, rows_per_block, row_begin,
                                       scale, sms, stream);
  }
  return cudaErrorInvalidValue;
}

template <class TG, class TW>
cudaError_t launch_grads(const void* grad, const void* weight, const float* alpha,
                         const float* beta, float* d_alpha, float* d_beta, int64_t m, int64_t n,
                         int64_t alpha_rows, int64_t rows_per_block, int64_t row_begin, float scale,
                         int sms, cudaStream_t stream) {
  const auto* g = static_cast<const TG*>(grad);
  const auto* w = static_cast<const TW*>(weight);
  beta_grad_kernel<TG, TW><<<blocks_for(m, 8, sms), 256, 0, stream>>>(
      g, w, alpha, d_beta, m, n, rows_per_block, row_begin, scale);
  const dim3 grid(static_cast<unsigned>((n + 255) / 256), static_cast<unsigned>(alpha_rows));
  alpha_grad_kernel<TG, TW><<<grid, 256, 0, stream>>>(g, w, beta, d_alpha, m, n, alpha_rows,
                                                      rows_per_block, row_begin, scale);
  return cudaGetLastError();
}

template <class TG>
cudaError_t dispatch_grads(ElementType weight_type, const void* grad, const void* weight,
                           const float* alpha, const float* beta, float* d_alpha, float* d_beta,
                           int64_t m, int64_t n, int64_t alpha_rows, int64_t rows_per_block,
                           int64_t row_begin, float scale, int sms, cudaStream_t stream) {
  switch (weight_type) {
    case ElementType::f32:
      return launch_grads<TG, float>(grad, weight, alpha, beta, d_alpha, d_beta, m, n, alpha_rows,
                                     rows_per_block, row_begin, scale, sms, stream);
    case ElementType::bf16:
      return launch_grads<TG, __nv_bfloat16>(grad, weight, alpha, beta, d_alpha, d_beta, m, n,
                                             alpha_rows, rows_per_block, row_begin, scale, sms,
                                             stream);
    case ElementType::f16:
      return launch_grads<TG, __half>(grad, weight, alpha, beta, d_alpha, d_beta, m, n, alpha_rows,
                                      rows_per_block, row_begin, scale, sms, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t spp_effective_weight(const void* weight, ElementType weight_type, const float* alpha,
                                 const float* beta, void* out, ElementType out_type, int64_t m,
                                 int64_t n, int64_t rows_per_block, int64_t row_begin, float scale,
                                 int sms, cudaStream_t stream) {
  if (m == 0 || n == 0) return cudaSuccess;
  switch (weight_type) {
    case ElementType::f32:
      return dispatch_weight<float>(out_type, weight, alpha, beta, out, m, n, rows_per_block,
                                    row_begin, scale, sms, stream);
    case ElementType::bf16:
      return dispatch_weight<__nv_bfloat16>(out_type, weight, alpha, beta, out, m, n,
                                            rows_per_block, row_begin, scale, sms, stream);
    case ElementType::f16:
      return dispatch_weight<__half>(out_type, weight, alpha, beta, out, m, n, rows_per_block,
                                     row_begin, scale, sms, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t spp_weight_grads(const void* grad, ElementType grad_type, const void* weight,
                             ElementType weight_type, const float* alpha, const float* beta,
                             float* d_alpha, float* d_beta, int64_t m, int64_t n,
                             int64_t alpha_rows, int64_t rows_per_block, int64_t row_begin,
                             float scale, int sms, cudaStream_t stream) {
  if (alpha_rows > 65535) return cudaErrorInvalidValue;  // grid.y
  if (n == 0 || alpha_rows == 0) {
    if (m > 0) return cudaMemsetAsync(d_beta, 0, m * sizeof(float), stream);
    return cudaSuccess;
  }
  switch (grad_type) {
    case ElementType::f32:
      return dispatch_grads<float>(weight_type, grad, weight, alpha, beta, d_alpha, d_beta, m, n,
                                   alpha_rows, rows_per_block, row_begin, scale, sms, stream);
    case ElementType::bf16:
      return dispatch_grads<__nv_bfloat16>(weight_type, grad, weight, alpha, beta, d_alpha, d_beta,
                                           m, n, alpha_rows, rows_per_block, row_begin, scale, sms,
                                           stream);
    case ElementType::f16:
      return dispatch_grads<__half>(weight_type, grad, weight, alpha, beta, d_alpha, d_beta, m, n,
                                    alpha_rows, rows_per_block, row_begin, scale, sms, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace spartan::kernels::cuda
