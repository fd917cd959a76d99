// A tiny model and synthetic rows for the trainer's tests (test_trainer, test_precision).
#pragma once

#include "data/dataset.h"
#include "model/hf_config.h"

namespace spartan::testing_support {

// Two layers of width 64, four heads over two KV heads.
inline model::LlamaArch tiny(int64_t vocab) {
  model::LlamaArch a;
  a.vocab_size = vocab;
  a.hidden_size = 64;
  a.intermediate_size = 128;
  a.num_layers = 2;
  a.num_heads = 4;
  a.num_kv_heads = 2;
  a.max_position_embeddings = 256;
  return a;
}

// Synthetic rows: a repeating pattern the model can learn, with some labels masked.
inline data::Sequences synthetic_rows(int64_t rows, int64_t L, int64_t vocab) {
  data::Sequences s;
  s.seq_len = L;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < L; ++t) {
      s.ids.push_back((r * 7 + t * 3) % vocab);
      s.labels.push_back(t < 3 + r % 4 ? data::kIgnore : s.ids.back());
    }
  return s;
}

}  // namespace spartan::testing_support
