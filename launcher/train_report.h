// What `spartan train` tells and keeps about a run: the settings table and summary.json (status
// "running") at the start, the result saved as the method says with the held-out table and the
// final summary.json at the end (what `spartan runs` reads), and the identity a checkpoint must
// match to be resumed.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "checkpoints/export.h"
#include "launcher/train_start.h"
#include "trainer/eval.h"
#include "trainer/trainer.h"

namespace spartan::launcher {

// What a checkpoint must agree on with the run that resumes from it.
nlohmann::json run_identity(const Config& c);

// Held-out loss before and after training, and of LoRA*'s re-masked merge.
struct HeldOut {
  bool measured = false;
  trainer::EvalResult before, after, re_masked;
};

// The result saved as the method says (checkpoints/export.h). Several ranks never gather the
// model: rank 0 exports from the final checkpoint and the base folder tensor by tensor, as
// `spartan merge` does, or (prompt, prefix and block adapters, small) from the trained tensors
// alone. With a masked merge (LoRA*) the re-masked model is evaluated into held_out.
checkpoints::Exported save_result(TrainStart& s, HeldOut& held_out);

class TrainReport {
 public:
  // Every rank: the base's sparsity is summed over the grid.
  TrainReport(TrainStart& s, int64_t trainable, int64_t total_steps);
  // Rank 0: summary.json for a new run (a resumed one keeps its own until it ends: a checkpoint
  // refused on resume must not change what the run folder says) and the settings table.
  void announce() const;
  // Rank 0: the held-out table, the run's line and the final summary.json.
  void finish(const trainer::TrainSummary& s, const HeldOut& held_out,
              const checkpoints::Exported& exported);

 private:
  const TrainStart& start_;
  int64_t trainable_, total_steps_;
  std::vector<int64_t> before_load_;  // each rank's resident bytes before its shard loaded
  nlohmann::json summary_;
};

}  // namespace spartan::launcher
