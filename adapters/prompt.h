// Prompt tuning (Lester et al. 2021) at the input embeddings, as HF PEFT's PromptTuningConfig:
// num_virtual_tokens learned vectors are concatenated in front of every sequence's embeddings;
// the model drops their outputs again. Initialised N(0, 1) (PEFT's "RANDOM").
// (PEFT also scores the first real token from the last virtual one; Spartan's sequences start
// with <s>, which is never a target, so the losses agree.)
#pragma once

#include <torch/torch.h>

#include "model/hooks.h"

namespace spartan::adapters {

class PromptEmbedding : public model::EmbeddingAdapter {
 public:
  PromptEmbedding(int64_t num_virtual_tokens, int64_t hidden_size);
  int64_t num_virtual_tokens() const override { return prompt_embeddings.size(0); }
  torch::Tensor forward(const torch::Tensor& embeds) override;  // (B, T, H) -> (B, P + T, H)

  torch::Tensor prompt_embeddings;  // (P, H)
};

}  // namespace spartan::adapters
