// Run folders read back: `spartan runs summary` (a table of runs) and `spartan runs plot`
// (loss curves, SoRA's memorisation/generalisation curve, runs side by side, drawn by gnuplot).
// A run folder holds metrics.jsonl, config.resolved.toml and summary.json, which `train` writes
// when it starts and again when it ends. Torch-free.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace spartan::launcher {

struct RunInfo {
  std::string dir, name;
  std::string status;  // "done", "unfinished" (stopped, killed or still running) or "-"
  std::string method, base;
  double base_sparsity = NAN;  // zeros among the base's projection weights
  int64_t trainable = -1;      // trainable parameters (-1: unknown)
  int64_t steps = 0, total_steps = 0;
  double train_loss = NAN;                         // the last logged step's
  double held_out_loss = NAN, held_out_ppl = NAN;  // after training (else the last evaluation)
  double re_masked_ppl = NAN;  // LoRA*: the merge with the base's zeros imposed again
  double seconds = 0;          // training time of the logged steps, over every resume
  double tokens_per_s = NAN;
};

// The run folder `dir`; a UsageError if it holds neither metrics.jsonl nor summary.json.
RunInfo read_run(const std::string& dir);

// Each argument that is a run folder, or else the run folders directly inside it (a folder of
// runs such as runs/demo), sorted by name; a UsageError if an argument holds no run.
std::vector<std::string> find_runs(const std::vector<std::string>& args);

// The table of runs, aligned text or a markdown table.
std::string runs_table(const std::vector<RunInfo>& runs, bool markdown);

// Draws with gnuplot (PNG): loss.png (training and held-out loss, learning rate) for the run,
// and sora_xi_curve.png when the run logged SoRA's xi phases, into `out_dir` (created).
// Returns the files written.
std::vector<std::string> plot_run(const RunInfo& run, const std::string& out_dir);
// The runs' training and held-out loss side by side in one PNG, `out` (which must not exist).
void plot_compare(const std::vector<RunInfo>& runs, const std::string& out);

}  // namespace spartan::launcher
