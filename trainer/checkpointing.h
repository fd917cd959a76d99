// The trainer's checkpoints: what a checkpoint holds of this rank (trained tensors and their
// optimizer moments, the base's zero-pattern digests, this stage's RNG stream) and of the loop
// (step, tokens, data position, skipped steps, loss), saved every [checkpoint] every steps, at
// the end and when the run is stopped; restored on resume after checking that the checkpoint
// belongs to this run (identity) and this pruned base (zero patterns).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "common/config.h"
#include "data/sampler.h"
#include "model/llama.h"
#include "parallel/grid.h"
#include "trainer/optimizers.h"

namespace spartan::trainer {

// Where the loop stands.
struct Progress {
  int64_t step = 0;           // optimizer steps done
  int64_t tokens = 0;         // tokens trained on, over every DP replica
  int64_t skipped_steps = 0;  // non-finite losses
  double loss = 0;            // of the last step run (a non-finite one too)
};

class CheckpointKeeper {
 public:
  // `enabled` false: nothing is saved (a resume still restores). With mask targets, their zero
  // patterns' digests are computed here (collectives over the grid).
  CheckpointKeeper(const Config& config, model::Llama& model, parallel::Grid& grid,
                   std::string run_dir, bool enabled, nlohmann::json identity,
                   const std::vector<model::Proj>& mask_targets);

  bool enabled() const { return enabled_; }
  // Whether a checkpoint is due after `steps_done` steps (`last`: the run's final step).
  bool due(int64_t steps_done, bool last) const;
  void save(const Progress& progress, Optimizers& optimizers, const data::Sampler& sampler);
  // Restores this rank's parts from `folder`; returns the progress saved there.
  Progress restore(const std::string& folder, Optimizers& optimizers, data::Sampler& sampler);

 private:
  const Config& config_;
  model::Llama& model_;
  parallel::Grid& grid_;
  std::string run_dir_;
  bool enabled_;
  nlohmann::json identity_;
  std::vector<checkpoints::Entry> masks_;
  std::string rng_key_;
};

}  // namespace spartan::trainer
