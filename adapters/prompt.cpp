#include "adapters/prompt.h"

namespace spartan::adapters {

PromptEmbedding::PromptEmbedding(int64_t num_virtual_tokens, int64_t hidden_size) {
  prompt_embeddings =
      register_parameter("prompt_embeddings", torch::randn({num_virtual_tokens, hidden_size}));
}

torch::Tensor PromptEmbedding::forward(const torch::Tensor& embeds) {
  auto prompt = prompt_embeddings.to(embeds.scalar_type()).unsqueeze(0).expand(
      {embeds.size(0), -1, -1});
  return torch::cat({prompt, embeds}, 1);
}

}  // namespace spartan::adapters
