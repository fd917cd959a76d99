#include "adapters/prompt.h"

namespace spartan::adapters {

PromptEmbedding::PromptEmbedding(int64_t num_virtual_tokens, int64_t hidden_size) {
  prompt_embeddings =
      register_parameter("prompt_embeddings", torch::randn({num_virtual_tokens, hidden_size}));
}

torch::Tensor PromptEmbedding::forward(const torch::Tensor& embeds) {
  auto prompt =
      prompt_embeddings.to(embeds.scalar_type()).unsqueeze(0).expand({embeds.size(0), -1, -1});
  return torch::cat({prompt, embeds}, 1);
}

const PeftRef* PromptMethod::peft_ref() const {
  static const PeftRef row{"none (vectors)", "none",          "addition",        "none",
                           "parallel",       "concatenation", "input embeddings"};
  return &row;
}

void PromptMethod::attach(model::Llama& model, const AdapterConfig& config) const {
  model->set_base_trainable(false);
  auto prompt = std::make_shared<PromptEmbedding>(config.prompt.num_virtual_tokens,
                                                  model->arch().hidden_size);
  if (model->has_embedding()) model->attach_embedding(prompt);
  model->set_prompt_length(config.prompt.num_virtual_tokens);
}

ParameterCount PromptMethod::count(const model::LlamaArch& arch, const AdapterConfig& c) const {
  torch::NoGradGuard no_grad;
  ParameterCount n;
  n.shared =
      PromptEmbedding(c.prompt.num_virtual_tokens, arch.hidden_size).prompt_embeddings.numel();
  n.formula_value = c.prompt.num_virtual_tokens * arch.hidden_size;
  n.formula = "P·H";
  n.insertions = 1;
  return n;
}

}  // namespace spartan::adapters
