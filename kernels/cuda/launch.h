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

}  // namespace spartan::kernels::cuda
