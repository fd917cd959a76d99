// CUDA masked merge: one pass over base and delta, the sum in fp32, one rounding to the base's
// dtype (as the CPU reference). Memory-bound: reads 2 + 4 bytes and writes 2 per bf16 entry.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.h"

namespace spartan::kernels::cuda {
namespace {

template <class T>
__global__ void masked_merge_kernel(const T* __restrict__ base, const float* __restrict__ delta,
                                    T* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float w = to_float(base[i]);
    out[i] = from_float<T>(w == 0.0f ? 0.0f : w + delta[i]);
  }
}

template <class T>
cudaError_t launch(const void* base, const float* delta, void* out, int64_t n, int sms,
                   cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted < 8LL * sms ? wanted : 8LL * sms);
  masked_merge_kernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(base), delta,
                                                          static_cast<T*>(out), n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t masked_merge(const void* base, const float* delta, void* out, int64_t n,
                         ElementType type, int sms, cudaStream_t stream) {
  switch (type) {
    case ElementType::f32:
      return launch<float>(base, delta, out, n, sms, stream);
    case ElementType::bf16:
      return launch<__nv_bfloat16>(base, delta, out, n, sms, stream);
    case ElementType::f16:
      return launch<__half>(base, delta, out, n, sms, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace spartan::kernels::cuda
