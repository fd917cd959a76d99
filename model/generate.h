// Text generation from a loaded model: greedy when the temperature is 0 (the same tokens as
// transformers' generate(do_sample=False)), otherwise sampling with temperature, top-k and top-p
// in transformers' order. A KV cache runs each new token alone; a model whose block adapters mix
// positions (tiny attention) recomputes the whole sequence instead (the same tokens, slower).
#pragma once

#include <cstdint>
#include <vector>

#include "model/llama.h"

namespace spartan::model {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;
  int64_t top_k = 0;  // 0: off
  uint64_t seed = 0;
  int64_t eos_id = -1;    // stop after it (it is returned); < 0: never
  bool use_cache = true;  // false: recompute the whole sequence each step (for tests)
};

struct Generation {
  std::vector<int64_t> tokens;  // the new tokens
  bool stopped_at_eos = false;
  int64_t prompt_tokens = 0;  // after any cut from the left
  int64_t cut_tokens = 0;     // cut from the left of the prompt to fit the positions
  double prompt_seconds = 0;  // the prompt's forward pass (the first token's logits)
  double seconds = 0;         // the whole generation, prompt included
};

// `prompt` (BOS included where wanted) continued by up to max_new_tokens. A prompt that leaves
// no room in the model's positions is cut from the left (keeping its BOS).
Generation generate(Llama& model, std::vector<int64_t> prompt, const GenerateOptions& options);

}  // namespace spartan::model
