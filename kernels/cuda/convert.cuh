// Element conversions of the .cu files: each supported type to fp32 exactly, and fp32 back with
// one round-to-nearest-even (as torch's .to() on the CPU).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace spartan::kernels::cuda {

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_float(__half x) { return __half2float(x); }

template <class T>
__device__ T from_float(float x);
template <>
__device__ inline float from_float<float>(float x) {
  return x;
}
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ inline __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

}  // namespace spartan::kernels::cuda
