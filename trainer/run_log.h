// What a run logs as it trains (world rank 0 writes): one JSON line per record in
// <run>/metrics.jsonl, and the same numbers as TensorBoard scalars in <run>/tb/ (unless
// run.tensorboard = false), both flushed after every record so that a live run can be watched.
// Torch-free.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "trainer/tensorboard.h"

namespace spartan::trainer {

// The TensorBoard scalars of a metrics record: "train/loss", "eval/perplexity", "perf/tokens_per_s"
// and so on; an event record ("event": "xi_phase") gives "xi_phase/<key>". Fields that are not
// numbers (comm_bytes, event) are left out.
std::vector<std::pair<std::string, float>> tensorboard_scalars(const nlohmann::json& record);

// A duration as "1h02m", "3m07s" or, under a minute, seconds with `decimals` decimals.
std::string format_duration(double seconds, int decimals);

// One point of SoRA's memorisation/generalisation curve: after a phase, at threshold ξ.
struct XiPoint {
  double xi = 0;
  int64_t nonzero = 0;
  double train_loss = 0, held_out_loss = 0;
};
// The points logged to metrics.jsonl ("event": "xi_phase"), in step order; of records with the
// same step the last counts.
std::vector<XiPoint> read_xi_points(const std::string& metrics_path);

class RunLog {
 public:
  // `keep_until`: the step a resumed run continues from (0 for a new run). Records of later steps,
  // which the interrupted run logged after its checkpoint, are dropped from both logs, so that
  // each step appears once; a record torn by a kill is dropped too.
  RunLog(const std::string& run_dir, int64_t keep_until, bool tensorboard);
  // `record` has an integer "step".
  void write(const nlohmann::json& record);

 private:
  std::string metrics_path_;
  std::ofstream metrics_;
  std::unique_ptr<EventLog> events_;
};

}  // namespace spartan::trainer
