#include "adapters/prefix.h"

#include "common/error.h"

namespace spartan::adapters {

PrefixEncoder::PrefixEncoder(int64_t num_virtual_tokens, int64_t kv_dim_, int64_t num_layers_,
                             int64_t encoder_hidden, bool projection)
    : kv_dim(kv_dim_), num_layers(num_layers_) {
  const int64_t all = num_layers * 2 * kv_dim;
  embedding = register_module("embedding",
                              torch::nn::Embedding(num_virtual_tokens, projection ? kv_dim : all));
  if (projection)
    transform = register_module(
        "transform",
        torch::nn::Sequential(torch::nn::Linear(kv_dim, encoder_hidden), torch::nn::Tanh(),
                              torch::nn::Linear(encoder_hidden, all)));
}

torch::Tensor PrefixEncoder::past_key_values() {
  return transform ? transform->forward(embedding->weight) : embedding->weight;
}

torch::Tensor PrefixEncoder::forward() {
  const int64_t P = num_virtual_tokens();
  // Columns [(2l + j)·E, (2l + j + 1)·E) are layer l's keys (j = 0) or values (j = 1).
  return past_key_values().view({P, num_layers, 2, kv_dim}).permute({1, 2, 0, 3});
}

std::shared_ptr<PrefixEncoder> make_prefix_encoder(const model::LlamaArch& arch,
                                                   const AdapterConfig& config) {
  const int64_t kv_dim = arch.num_kv_heads * arch.head_dim();
  const auto& p = config.prefix;
  return std::make_shared<PrefixEncoder>(p.num_virtual_tokens, kv_dim, arch.num_layers,
                                         p.encoder_hidden_size > 0 ? p.encoder_hidden_size : kv_dim,
                                         p.projection);
}

const PeftRef* PrefixMethod::peft_ref() const {
  static const PeftRef row{"dense MLP (training only)",
                           "MLP shared",
                           "addition",
                           "none",
                           "parallel",
                           "concatenation",
                           "keys, values"};
  return &row;
}

void PrefixMethod::attach(model::Llama& model, const AdapterConfig& config) const {
  model->set_base_trainable(false);
  if (!holds_every_layer(model))
    throw UsageError(
        "prefix tuning's encoder feeds every layer, so it cannot be split into "
        "pipeline stages",
        "[parallel] pp", "use pp = 1 with prefix tuning");
  if (model->projection(0, model::Proj::k)->slice().holders > 1)
    throw UsageError("prefix tuning with more TP ranks than KV heads", "[parallel] tp",
                     "use tp <= num_kv_heads for method \"prefix\"");
  model->attach_kv(make_prefix_encoder(model->arch(), config));
}

ParameterCount PrefixMethod::count(const model::LlamaArch& a, const AdapterConfig& c) const {
  // One encoder for every layer; in training with its MLP (the saved form is P·L·2E).
  torch::NoGradGuard no_grad;
  ParameterCount n;
  for (const auto& t : make_prefix_encoder(a, c)->parameters()) n.shared += t.numel();
  const int64_t P = c.prefix.num_virtual_tokens, E = a.num_kv_heads * a.head_dim();
  const int64_t L = a.num_layers;
  const int64_t h = c.prefix.encoder_hidden_size > 0 ? c.prefix.encoder_hidden_size : E;
  n.formula_value =
      c.prefix.projection ? P * E + E * h + h + h * 2 * L * E + 2 * L * E : P * 2 * L * E;
  n.formula = c.prefix.projection ? "PE + (E + 1)h + (h + 1)·2LE, E = n_kv·d_head"
                                  : "P·2LE, E = n_kv·d_head";
  n.insertions = L;
  return n;
}

}  // namespace spartan::adapters
