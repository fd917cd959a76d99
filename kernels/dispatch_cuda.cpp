// Tensors to the raw entry points of kernels/cuda/: contiguous inputs, the output allocated on
// the base's device, torch's current stream, every CUDA error turned into an exception.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/launch.h"
#include "kernels/kernels.h"

namespace spartan::kernels::cuda_tensors {

namespace {

void check(cudaError_t rc, const char* kernel) {
  if (rc != cudaSuccess)
    throw std::runtime_error(std::string("kernels: ") + kernel + ": " + cudaGetErrorString(rc));
}

cuda::ElementType element_type(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return cuda::ElementType::f32;
    case torch::kBFloat16:
      return cuda::ElementType::bf16;
    case torch::kFloat16:
      return cuda::ElementType::f16;
    default:
      throw std::invalid_argument("kernels: unsupported dtype");
  }
}

}  // namespace

torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta) {
  torch::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard guard(base.device());
  const auto b = base.contiguous();
  const auto d = delta.to(torch::kFloat32).contiguous();
  auto out = torch::empty_like(b);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  check(cuda::masked_merge(b.data_ptr(), d.data_ptr<float>(), out.data_ptr(), b.numel(),
                           element_type(b), sms, at::cuda::getCurrentCUDAStream()),
        "masked_merge");
  return out;
}

}  // namespace spartan::kernels::cuda_tensors
