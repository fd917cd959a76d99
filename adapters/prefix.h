// Prefix tuning (Li & Liang 2021) as HF PEFT's PrefixTuningConfig: P learned key and value
// vectors in front of every layer's own (model::KvAdapter). In training they come from the
// reparameterisation MLP, embedding (P, E) -> Linear(E, h) -> tanh -> Linear(h, L·2·E), with
// E = n_kv_heads·head_dim; at save the MLP is dropped and its output (P, L·2·E) kept, which is
// what PEFT saves as prompt_embeddings and loads in inference mode (PEFT-Ref's footnote).
// Parameter names follow PEFT's PrefixEncoder: embedding.weight, transform.{0,2}.{weight,bias}.
//
// Tensor parallelism: every rank computes all prefixes and uses its KV heads' columns, so the
// parameters are replicated with partial gradients, summed over TP. The encoder feeds every
// layer, so it cannot be split into pipeline stages.
#pragma once

#include <torch/torch.h>

#include "adapters/method.h"
#include "model/hooks.h"

namespace spartan::adapters {

class PrefixEncoder : public model::KvAdapter {
 public:
  // projection false: the embedding is (P, L·2·E) itself (PEFT's inference form).
  PrefixEncoder(int64_t num_virtual_tokens, int64_t kv_dim, int64_t num_layers,
                int64_t encoder_hidden, bool projection);
  int64_t num_virtual_tokens() const override { return embedding->weight.size(0); }
  torch::Tensor forward() override;  // (L, 2, P, E)
  // (P, L·2·E): the form PEFT saves.
  torch::Tensor past_key_values();

  torch::nn::Embedding embedding{nullptr};
  torch::nn::Sequential transform{nullptr};  // empty without projection
  int64_t kv_dim, num_layers;
};

// The prefix encoder [adapter.prefix] configures for a model of `arch`, with fresh values.
std::shared_ptr<PrefixEncoder> make_prefix_encoder(const model::LlamaArch& arch,
                                                   const AdapterConfig& config);

// "prefix": saved in PEFT's layout (the MLP's output); needs every layer on each rank (pp = 1)
// and at most one TP rank per KV head.
class PrefixMethod : public Method {
 public:
  const char* name() const override { return "prefix"; }
  const char* title() const override { return "prefix tuning"; }
  const PeftRef* peft_ref() const override;
  Site site() const override { return Site::keys_values; }
  Export exports() const override { return Export::peft_prefix; }
  void attach(model::Llama& model, const AdapterConfig& config) const override;
  ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const override;
};

}  // namespace spartan::adapters
