// The training loop: frozen base + trainable parameters (an adapter, or the whole base in "full"
// mode), gradient accumulation, AdamW, warmup + decay, global gradient-norm clipping, NaN/Inf
// steps skipped and counted, a progress line and metrics.jsonl (world rank 0 writes).
//
// The loss of a step is the mean next-token loss over every scored token of the global batch
// (token-weighted over micro-batches and DP replicas), so splitting the batch differently, over
// micro-batches or ranks, gives the same loss. On a process grid each DP replica takes its part
// of every global batch, runs it through the 1F1B pipeline, and the gradients are completed as
// trainer/distributed.h describes before the optimizer steps.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config.h"
#include "data/dataset.h"
#include "model/llama.h"
#include "parallel/grid.h"
#include "trainer/eval.h"

namespace spartan::trainer {

class GradientSync;

struct TrainSummary {
  int64_t steps = 0;
  int64_t skipped_steps = 0;  // non-finite losses
  double last_loss = 0;
  double tokens_per_s = 0;
  double seconds = 0;
  int64_t trainable_parameters = 0;  // of the whole model
  double comm_share = 0;             // share of step time in communication (world rank 0)
  parallel::CommStats comm;          // world rank 0's traffic over the whole run
  // Each world rank's peak resident memory (bytes) from the first step on, the loaded model
  // included; from the process's start where the kernel refuses to reset the peak.
  std::vector<int64_t> peak_resident_bytes;
  bool peak_from_first_step = false;
};

class Trainer {
 public:
  // `run_dir` receives metrics.jsonl. `held_out` may be empty (no evaluation during training).
  Trainer(const Config& config, model::Llama& model, const data::Sequences& train,
          const data::Sequences& held_out, std::string run_dir);
  // On a process grid: `model` is this rank's shard of it.
  Trainer(const Config& config, model::Llama& model, parallel::Grid& grid,
          const data::Sequences& train, const data::Sequences& held_out, std::string run_dir);

  TrainSummary run();

  int64_t total_steps() const { return total_steps_; }

  // Saves sharded checkpoints under <run_dir>/checkpoints every [checkpoint] every steps and at
  // the end. `identity` (config and base-model digests) is stored and must match on resume;
  // `mask_targets`: the projections whose base zero pattern is recorded and re-checked.
  void enable_checkpoints(nlohmann::json identity, std::vector<model::Proj> mask_targets);
  // Continues from a checkpoint folder: parameters, optimizer moments, data position, step.
  void resume_from(std::string checkpoint_folder) { resume_ = std::move(checkpoint_folder); }
  // Called after every optimizer step (tests use it to record losses).
  std::function<void(int64_t step, double loss)> on_step;
  // The signal asking this rank to stop (0: none), polled after every step. The ranks agree on it
  // with one small all-reduce; then a checkpoint is saved and run() throws spartan::Stopped.
  std::function<int()> stop_signal;

 private:
  // One global batch's forward and backward passes on this rank: the loss (the mean over every
  // scored token of the global batch, the same on every rank) and the tokens it holds over every
  // DP replica.
  std::pair<double, int64_t> forward_backward(const std::vector<int64_t>& rows, GradientSync& sync);
  int agreed_stop_signal();

  const Config& config_;
  model::Llama& model_;
  std::unique_ptr<parallel::Grid> own_grid_;
  parallel::Grid& grid_;
  const data::Sequences& train_;
  const data::Sequences& held_out_;
  std::string run_dir_;
  int64_t total_steps_ = 0;
  bool checkpointing_ = false;
  nlohmann::json identity_;
  std::vector<model::Proj> mask_targets_;
  std::string resume_;
};

// Rows `idx` of a Sequences as (ids, labels) tensors of shape (n, L).
std::pair<torch::Tensor, torch::Tensor> gather(const data::Sequences& s,
                                               const std::vector<int64_t>& idx);

}  // namespace spartan::trainer
