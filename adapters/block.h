// Adapters after a whole block (PEFT-Ref workspace "attention / FFN layer", direct addition).
// Each sees the block's normalised input h and its output a (before the residual) and returns
// a + f(·), with f zero at initialisation, so training starts exactly at the base model.
//
//   Houlsby et al. 2019     f(a) = W_up·relu(W_down·a + b_down) + b_up, after attention and FFN
//   Mahabadi et al. 2021    Compacter: the same bottleneck (GELU) with PHM layers,
//                           W = Σ_i A_i ⊗ (s_i t_i), the A_i shared by every layer
//   Zhao et al. 2022        tiny-attention: causal attention with a few tiny heads, parallel to
//                           the attention block: f(h) = O·attention(h)
//
// Tensor parallelism: a block's input and output are whole and the same on every rank of a TP
// group, so these adapters are replicated and each rank computes their full gradient.
// Parameters are fp32; the base may be bf16.
#pragma once

#include <memory>

#include <torch/torch.h>

#include "model/hooks.h"

namespace spartan::adapters {

class HoulsbyAdapter : public model::BlockAdapter {
 public:
  HoulsbyAdapter(int64_t hidden, int64_t bottleneck);
  torch::Tensor forward(const torch::Tensor& block_input,
                        const torch::Tensor& block_output) override;

  torch::Tensor down_weight;  // (m, H), N(0, 0.01²)
  torch::Tensor down_bias;    // (m), 0
  torch::Tensor up_weight;    // (H, m), 0
  torch::Tensor up_bias;      // (H), 0
};

// The A_i of every Compacter layer: one (n, n, n) tensor, registered once in the model (in the
// first layer's attention adapter) and used by all.
class PhmRule : public torch::nn::Module {
 public:
  explicit PhmRule(int64_t n);
  torch::Tensor A;  // (n, n, n): A_i = A[i], N(0, 0.01²)
};

// A PHM layer y = x·W + b with W (in, out) = Σ_i A_i ⊗ (s_i t_i).
struct PhmWeights {
  torch::Tensor s;  // (n, in/n, k)
  torch::Tensor t;  // (n, k, out/n)
  torch::Tensor b;  // (out)
  torch::Tensor weight(const torch::Tensor& A) const;  // (in, out)
};

class CompacterAdapter : public model::BlockAdapter {
 public:
  // Registers `rule` as its own submodule when `owns_rule` (one adapter of the model does).
  CompacterAdapter(int64_t hidden, int64_t bottleneck, int64_t n, int64_t rank,
                   std::shared_ptr<PhmRule> rule, bool owns_rule);
  torch::Tensor forward(const torch::Tensor& block_input,
                        const torch::Tensor& block_output) override;

  PhmWeights down, up;  // up.t starts at 0, so the adapter starts at 0
  std::shared_ptr<PhmRule> rule;
};

class TinyAttentionAdapter : public model::BlockAdapter {
 public:
  TinyAttentionAdapter(int64_t hidden, int64_t heads, int64_t head_dim);
  torch::Tensor forward(const torch::Tensor& block_input,
                        const torch::Tensor& block_output) override;
  bool mixes_positions() const override { return true; }

  int64_t heads, head_dim;
  torch::Tensor qkv_weight;  // (3·heads·head_dim, H), N(0, 0.02²)
  torch::Tensor o_weight;    // (H, heads·head_dim), 0
};

}  // namespace spartan::adapters
