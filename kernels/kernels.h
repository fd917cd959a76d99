// kernels/: the operations worth a kernel of their own, each with a CPU reference (kernels/cpu/)
// and, where CUDA is compiled in, a CUDA implementation (kernels/cuda/) that is tested against
// it. Callers use this header only; each function picks the implementation by the tensors'
// device. Below parallel/ in the dependency order: kernels know torch and nothing of Spartan.
#pragma once

#include <torch/torch.h>

namespace spartan::kernels {

// Whether CUDA implementations are compiled into this binary (SPARTAN_CUDA).
bool cuda_compiled();

// The masked merge (the SPP paper's LoRA*): base + delta with the base's zeros re-imposed,
// in the base's dtype. out[i] = base[i] == 0 ? 0 : round(float(base[i]) + delta[i]).
// base: fp32, bf16 or fp16; delta: fp32 of the same shape on the same device. Where the base
// is zero the result is +0.0, whatever delta holds there; elsewhere the fp32 sum rounded once.
torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta);

namespace cpu {
torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta);
}  // namespace cpu

}  // namespace spartan::kernels
