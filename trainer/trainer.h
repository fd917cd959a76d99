// The single-process training loop: frozen base + trainable parameters (an adapter, or the
// whole base in "full" mode), gradient accumulation, AdamW, warmup + decay, global gradient-norm
// clipping, NaN/Inf steps skipped and counted, a progress line and metrics.jsonl.
//
// The loss of a step is the mean next-token loss over every scored token of the global batch
// (token-weighted over micro-batches), so splitting the batch differently gives the same loss.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/config.h"
#include "data/dataset.h"
#include "model/llama.h"
#include "trainer/eval.h"

namespace spartan::trainer {

struct TrainSummary {
  int64_t steps = 0;
  int64_t skipped_steps = 0;  // non-finite losses
  double last_loss = 0;
  double tokens_per_s = 0;
  double seconds = 0;
  int64_t trainable_parameters = 0;
};

class Trainer {
 public:
  // `run_dir` receives metrics.jsonl. `held_out` may be empty (no evaluation during training).
  Trainer(const Config& config, model::Llama& model, const data::Sequences& train,
          const data::Sequences& held_out, std::string run_dir);

  TrainSummary run();

  int64_t total_steps() const { return total_steps_; }
  // Called after every optimizer step (tests use it to record losses).
  std::function<void(int64_t step, double loss)> on_step;

 private:
  const Config& config_;
  model::Llama& model_;
  const data::Sequences& train_;
  const data::Sequences& held_out_;
  std::string run_dir_;
  int64_t total_steps_ = 0;
};

// Rows `idx` of a Sequences as (ids, labels) tensors of shape (n, L).
std::pair<torch::Tensor, torch::Tensor> gather(const data::Sequences& s,
                                               const std::vector<int64_t>& idx);

// Resident memory of this process in bytes (from /proc/self/statm).
int64_t resident_bytes();

}  // namespace spartan::trainer
