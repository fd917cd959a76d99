// The optimizers of a method's parameter groups (adapters::Method::groups): AdamW for the main
// group, and for SoRA's gates, where the method has them, the gate optimizer (AdamW and the
// proximal step) with its own learning rate, ξ schedule and L1 term.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "adapters/method.h"
#include "checkpoints/checkpoint.h"
#include "common/config.h"
#include "parallel/grid.h"
#include "trainer/optimizer.h"
#include "trainer/sora_gates.h"

namespace spartan::trainer {

class Optimizers {
 public:
  // Counts the gate entries over the pipeline stages (a collective over PP); rank 0 prints the
  // gate optimizer's settings.
  Optimizers(const Config& config, const adapters::ParameterGroups& groups, parallel::Grid& grid,
             int64_t total_steps);

  bool has_gates() const { return gates_ != nullptr; }
  // The L1 term's gradient on the gates: added by one rank of each TP group in DP replica 0 (the
  // gradient sums over TP and DP would count it again elsewhere).
  void add_l1_gradient();
  // One update of every group at the schedule's learning rate `lr` of optimizer step `step`.
  void step(int64_t step, double lr);
  void zero_grad();

  double gate_lr(double lr) const;
  double xi(int64_t step) const { return xi_schedule_.xi(step); }
  // Whether step `step` ends a phase of an active ξ schedule (the trainer logs the curve).
  bool xi_phase_ends(int64_t step) const { return xi_phases() && xi_schedule_.phase_ends(step); }
  bool xi_phases() const { return gates_ && xi_schedule_.active(); }
  const XiSchedule& xi_schedule() const { return xi_schedule_; }
  int64_t gate_entries() const { return total_gate_entries_; }  // over the whole model
  int64_t nonzero_gates() const;  // over the whole model: a collective over PP

  // Checkpoint entries of every group: parameters and both AdamW moments.
  void entries(const model::Llama& model, std::vector<checkpoints::Entry>& out);
  // Their step counts, as stored in the manifest's state.
  nlohmann::json state() const;
  // Parameters, moments and step counts from a checkpoint, this rank's parts.
  void restore(const checkpoints::Checkpoint& ck, const model::Llama& model);

 private:
  const Config& config_;
  parallel::Grid& grid_;
  model::NamedTensors main_params_, gate_params_;
  AdamW main_;
  std::unique_ptr<GateOptimizer> gates_;
  XiSchedule xi_schedule_;
  int64_t gate_entries_ = 0, total_gate_entries_ = 0;  // this rank's, the whole model's
};

// n summed over the pipeline stages.
int64_t sum_over_stages(parallel::Grid& grid, int64_t n);

}  // namespace spartan::trainer
