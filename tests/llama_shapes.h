// Published model shapes the tests reason about (no weights: the shapes alone).
#pragma once

#include "model/hf_config.h"

namespace spartan::testing_support {

// LLaMA-2-70B: hidden 8192, MLP 28672, 80 layers, 64 heads with 8 KV heads, vocabulary 32000.
inline model::LlamaArch llama2_70b() {
  model::LlamaArch a;
  a.vocab_size = 32000;
  a.hidden_size = 8192;
  a.intermediate_size = 28672;
  a.num_layers = 80;
  a.num_heads = 64;
  a.num_kv_heads = 8;
  return a;
}

}  // namespace spartan::testing_support
