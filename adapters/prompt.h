// Prompt tuning (Lester et al. 2021) at the input embeddings, as HF PEFT's PromptTuningConfig:
// num_virtual_tokens learned vectors are concatenated in front of every sequence's embeddings;
// the model drops their outputs again. Initialised N(0, 1) (PEFT's "RANDOM").
// (PEFT also scores the first real token from the last virtual one; Spartan's sequences start
// with <s>, which is never a target, so the losses agree.)
#pragma once

#include <torch/torch.h>

#include "adapters/method.h"
#include "model/hooks.h"

namespace spartan::adapters {

class PromptEmbedding : public model::EmbeddingAdapter {
 public:
  PromptEmbedding(int64_t num_virtual_tokens, int64_t hidden_size);
  int64_t num_virtual_tokens() const override { return prompt_embeddings.size(0); }
  torch::Tensor forward(const torch::Tensor& embeds) override;  // (B, T, H) -> (B, P + T, H)

  torch::Tensor prompt_embeddings;  // (P, H)
};

// "prompt": saved in PEFT's layout.
class PromptMethod : public Method {
 public:
  const char* name() const override { return "prompt"; }
  const char* title() const override { return "prompt tuning"; }
  const PeftRef* peft_ref() const override;
  Site site() const override { return Site::embedding; }
  Export exports() const override { return Export::peft_prompt; }
  void attach(model::Llama& model, const AdapterConfig& config) const override;
  ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const override;
};

}  // namespace spartan::adapters
