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

// b(i) = (row_begin + i) / rows_per_block for the m rows of SPP's weight a rank holds: the
// block of W_α each takes (int64, on `device`).
torch::Tensor spp_row_blocks(int64_t m, int64_t rows_per_block, int64_t row_begin,
                             const torch::Device& device);

// SPP's effective weight (adapters/spp.h) for the m rows a rank holds, row i taking block
// b(i) = (row_begin + i) / rows_per_block of W_α:
//   out[i][j] = ((s·α[b(i)][j])·β[i] + 1)·W̃[i][j]
// each product and sum rounded in fp32 in that order, the result rounded once to `dtype`: a zero
// of W̃ is a zero of the result. W̃ (m, n): fp32, bf16 or fp16; α (r', n) and β (m, 1): fp32;
// `dtype`: fp32, bf16 or fp16 (the product's compute dtype). On the CPU, fp64 throughout too. One
// pass on the GPU, writing only the result; the CPU reference makes the m×n fp32 temporaries of the
// torch expression.
torch::Tensor spp_effective_weight(const torch::Tensor& weight, const torch::Tensor& alpha,
                                   const torch::Tensor& beta, int64_t rows_per_block,
                                   int64_t row_begin, double scale, torch::Dtype dtype);

// The gradients of W_α and W_β from G = dL/dW_eff (m, n; fp32 or the compute dtype), with
// H[i][j] = G[i][j]·W̃[i][j] in fp32:
//   dβ[i]    = Σ_j H[i][j]·(s·α[b(i)][j])
//   dα[b][j] = Σ_{i : b(i) = b} (H[i][j]·β[i])·s      (rows summed in order; 0 for blocks
//                                                      this rank does not hold)
// Both fp32: dα (r', n), dβ (m, 1). On the GPU without an m×n temporary (two passes over G and
// W̃); dα is the reference's bit for bit, dβ within fp32 rounding (its sum is ordered otherwise).
// `grad` may be overwritten: the CPU reference works in its memory when it is fp32.
struct SppGrads {
  torch::Tensor alpha, beta;
};
SppGrads spp_weight_grads(const torch::Tensor& grad, const torch::Tensor& weight,
                          const torch::Tensor& alpha, const torch::Tensor& beta,
                          int64_t rows_per_block, int64_t row_begin, double scale);

// SoRA's proximal step on a gate tensor, in place, with threshold t:
//   official  the official code's three lines, one after another: entries above t lose t,
//             then entries below −t gain t, then entries with |g| < t become 0
//   soft      sign(g)·max(|g| − t, 0)
// No CUDA kernel yet: on a GPU the reference's torch operations run there (the gates are r
// entries a projection; what a kernel would save is launches, best as one multi-tensor step).
enum class GateThresholdForm { official, soft };
void sora_threshold_(torch::Tensor& gate, double t, GateThresholdForm form);

namespace cpu {
void sora_threshold_(torch::Tensor& gate, double t, GateThresholdForm form);
torch::Tensor masked_merge(const torch::Tensor& base, const torch::Tensor& delta);
torch::Tensor spp_effective_weight(const torch::Tensor& weight, const torch::Tensor& alpha,
                                   const torch::Tensor& beta, int64_t rows_per_block,
                                   int64_t row_begin, double scale, torch::Dtype dtype);
SppGrads spp_weight_grads(const torch::Tensor& grad, const torch::Tensor& weight,
                          const torch::Tensor& alpha, const torch::Tensor& beta,
                          int64_t rows_per_block, int64_t row_begin, double scale);
}  // namespace cpu

}  // namespace spartan::kernels
