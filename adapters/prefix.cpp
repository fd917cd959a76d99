#include "adapters/prefix.h"

namespace spartan::adapters {

PrefixEncoder::PrefixEncoder(int64_t num_virtual_tokens, int64_t kv_dim_, int64_t num_layers_,
                             int64_t encoder_hidden, bool projection)
    : kv_dim(kv_dim_), num_layers(num_layers_) {
  const int64_t all = num_layers * 2 * kv_dim;
  embedding = register_module(
      "embedding", torch::nn::Embedding(num_virtual_tokens, projection ? kv_dim : all));
  if (projection)
    transform = register_module(
        "transform", torch::nn::Sequential(torch::nn::Linear(kv_dim, encoder_hidden),
                                           torch::nn::Tanh(),
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

}  // namespace spartan::adapters
