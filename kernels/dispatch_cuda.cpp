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

int sms() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

}  // namespace

torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta) {
  torch::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard guard(base.device());
  const auto b = base.contiguous();
  const auto d = delta.to(torch::kFloat32).contiguous();
  auto out = torch::empty_like(b);
  check(cuda::masked_merge(b.data_ptr(), d.data_ptr<float>(), out.data_ptr(), b.numel(),
                           element_type(b), sms(), at::cuda::getCurrentCUDAStream()),
        "masked_merge");
  return out;
}

torch::Tensor spp_effective_weight(const torch::Tensor& weight, const torch::Tensor& alpha,
                                   const torch::Tensor& beta, int64_t rows_per_block,
                                   int64_t row_begin, double scale, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard guard(weight.device());
  const auto w = weight.contiguous(), a = alpha.contiguous(), b = beta.contiguous();
  auto out = torch::empty(w.sizes(), w.options().dtype(dtype));
  check(cuda::spp_effective_weight(
            w.data_ptr(), element_type(w), a.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr(),
            element_type(out), w.size(0), w.size(1), rows_per_block, row_begin,
            static_cast<float>(scale), sms(), at::cuda::getCurrentCUDAStream()),
        "spp_effective_weight");
  return out;
}

SppGrads spp_weight_grads(const torch::Tensor& grad, const torch::Tensor& weight,
                          const torch::Tensor& alpha, const torch::Tensor& beta,
                          int64_t rows_per_block, int64_t row_begin, double scale) {
  torch::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard guard(weight.device());
  const auto g = grad.contiguous(), w = weight.contiguous(), a = alpha.contiguous(),
             b = beta.contiguous();
  SppGrads out{torch::empty_like(a), torch::empty_like(b)};
  check(cuda::spp_weight_grads(g.data_ptr(), element_type(g), w.data_ptr(), element_type(w),
                               a.data_ptr<float>(), b.data_ptr<float>(),
                               out.alpha.data_ptr<float>(), out.beta.data_ptr<float>(), w.size(0),
                               w.size(1), a.size(0), rows_per_block, row_begin,
                               static_cast<float>(scale), sms(), at::cuda::getCurrentCUDAStream()),
        "spp_weight_grads");
  return out;
}

}  // namespace spartan::kernels::cuda_tensors
