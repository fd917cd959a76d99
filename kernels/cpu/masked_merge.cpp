// CPU reference of the masked merge: the torch expression, computed in fp32.
#include "kernels/kernels.h"

namespace spartan::kernels::cpu {

torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta) {
  torch::NoGradGuard no_grad;
  auto merged = base.to(torch::kFloat32) + delta.to(torch::kFloat32);
  merged.masked_fill_(base.eq(0), 0.0);
  return merged.to(base.scalar_type());
}

}  // namespace spartan::kernels::cpu
