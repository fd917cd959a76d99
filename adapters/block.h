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

#include <torch/torch.h>

#include <memory>

#include "adapters/method.h"
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
  torch::Tensor s;                                     // (n, in/n, k)
  torch::Tensor t;                                     // (n, k, out/n)
  torch::Tensor b;                                     // (out)
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

// The three block methods: saved as SPARTAN_BLOCK adapters (PEFT has none of them); built for
// every layer in the same order on every rank (the same initial values on every layout).
class BlockMethod : public Method {
 public:
  Site site() const override { return Site::blocks; }
  Export exports() const override { return Export::spartan_block; }
  void attach(model::Llama& model, const AdapterConfig& config) const override;

 protected:
  using Pair =
      std::pair<std::shared_ptr<model::BlockAdapter>, std::shared_ptr<model::BlockAdapter>>;
  // Checks the configuration against the model before anything is built.
  virtual void check(const model::Llama& model, const AdapterConfig& config) const {}
  // The adapters after attention and after the FFN of layer l (either may be null); `shared`
  // is what the method's layers share, made by the first call.
  virtual Pair make_layer(int64_t l, int64_t hidden, const AdapterConfig& config,
                          std::shared_ptr<torch::nn::Module>& shared) const = 0;
};

class HoulsbyMethod : public BlockMethod {
 public:
  const char* name() const override { return "houlsby"; }
  const char* title() const override { return "Houlsby"; }
  const PeftRef* peft_ref() const override;
  ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const override;

 protected:
  Pair make_layer(int64_t l, int64_t hidden, const AdapterConfig& config,
                  std::shared_ptr<torch::nn::Module>& shared) const override;
};

// Counts nothing (no insertions) where n does not divide the hidden size and the bottleneck.
class CompacterMethod : public BlockMethod {
 public:
  const char* name() const override { return "compacter"; }
  const char* title() const override { return "Compacter"; }
  const PeftRef* peft_ref() const override;
  ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const override;

 protected:
  void check(const model::Llama& model, const AdapterConfig& config) const override;
  Pair make_layer(int64_t l, int64_t hidden, const AdapterConfig& config,
                  std::shared_ptr<torch::nn::Module>& shared) const override;
};

class TinyAttentionMethod : public BlockMethod {
 public:
  const char* name() const override { return "tiny_attention"; }
  const char* title() const override { return "tiny-attention"; }
  const PeftRef* peft_ref() const override;
  ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const override;

 protected:
  Pair make_layer(int64_t l, int64_t hidden, const AdapterConfig& config,
                  std::shared_ptr<torch::nn::Module>& shared) const override;
};

}  // namespace spartan::adapters
