// Perplexity.
//
// Two ways, both exp(mean next-token loss) over the positions that are scored:
//  - rows: fixed-length rows with labels (instruction data: only response tokens count);
//  - stream: one token stream (text data) cut into windows of `window` tokens every `stride`
//    tokens; the first window scores all its targets, each later one only the targets that no
//    earlier window scored (its last `stride`), so every token is scored once with up to
//    window − stride tokens of context (the Hugging Face perplexity recipe).
#pragma once

#include <cstdint>
#include <vector>

#include "data/dataset.h"
#include "model/llama.h"
#include "parallel/grid.h"

namespace spartan::trainer {

struct EvalResult {
  double loss = 0;  // mean next-token loss (nats)
  double ppl = 0;
  int64_t tokens = 0;  // scored targets
};

// With a grid, the batches are shared out over DP replicas (batch b to replica b mod DP) and
// run through the pipeline; every rank gets the same result.
EvalResult evaluate_rows(model::Llama& model, const data::Sequences& rows, int64_t batch_size,
                         int64_t max_batches = 0, parallel::Grid* grid = nullptr);

EvalResult evaluate_stream(model::Llama& model, const std::vector<int64_t>& tokens, int64_t window,
                           int64_t stride, int64_t batch_size);

}  // namespace spartan::trainer
