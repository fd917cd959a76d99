// Picks each kernel's implementation by the tensors' device.
#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

namespace spartan::kernels {

#ifdef SPARTAN_KERNELS_CUDA
namespace cuda_tensors {  // dispatch_cuda.cpp
torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta);
}
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

}  // namespace

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
