// What a run tells while it trains: the progress line every run.log_every steps (loss, learning
// rate, gradient norm, SoRA's ranks, tokens/s, communication share, ETA, memory), the held-out
// evaluation every eval.every steps (with SPP's zero-pattern check), the records of
// metrics.jsonl and TensorBoard (world rank 0 writes), and the end of each SoRA ξ phase.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/config.h"
#include "data/dataset.h"
#include "model/llama.h"
#include "parallel/grid.h"
#include "trainer/optimizers.h"
#include "trainer/run_log.h"

namespace spartan::trainer {

// One optimizer step as the report sees it.
struct StepRecord {
  int64_t step = 0;  // 0-based
  double loss = 0, lr = 0, grad_norm = 0;
  int64_t tokens = 0;         // this step's, over every DP replica
  int64_t tokens_seen = 0;    // since the run began
  int64_t skipped_steps = 0;  // since the run began
};

class ProgressReport {
 public:
  // `start_step`: the first step this process runs (after a resume, the checkpoint's).
  ProgressReport(const Config& config, model::Llama& model, parallel::Grid& grid,
                 const data::Sequences& train, const data::Sequences& held_out,
                 const std::string& run_dir, int64_t total_steps, int64_t start_step, bool resumed,
                 bool keeps_zero_pattern);

  // Starts the clocks (right before the first step).
  void start();
  // After each step; evaluation and the counts over stages are collectives, so every rank calls.
  void after_step(const StepRecord& r, const Optimizers& optimizers);
  // At the end of a SoRA ξ phase: train and held-out loss against the non-zero gate entries.
  void xi_phase(int64_t step, const Optimizers& optimizers);
  double seconds() const;  // since start()

 private:
  using Clock = std::chrono::steady_clock;
  const Config& config_;
  model::Llama& model_;
  parallel::Grid& grid_;
  const data::Sequences& train_;
  const data::Sequences& held_out_;
  int64_t total_steps_, start_step_;
  bool keeps_zero_pattern_;
  std::unique_ptr<RunLog> log_;  // world rank 0
  Clock::time_point start_, last_log_;
  double comm_at_log_ = 0;
  int64_t tokens_since_log_ = 0;
};

}  // namespace spartan::trainer
