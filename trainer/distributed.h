// What the trainer does between the backward passes and the optimizer step when the model is
// split over ranks (DESIGN.md §4), and how trained tensors come back to one rank.
//
// Per optimizer step, after every micro-batch's backward:
//   1. every gradient is summed over DP in flat buckets (each rank's loss is already divided by
//      the token count of the whole global batch, so the sum is the token-weighted average of
//      the replicas, as one rank would compute it); with parallel.dp_overlap a bucket's sum
//      starts during the last micro-batch's backward pass, as soon as autograd has accumulated
//      every gradient in it (buckets in the reverse order of the parameters, which is about the
//      order the backward pass produces them);
//   2. gradients that are partial sums per TP rank (replicated tensors fed by split ones) are
//      summed over TP;
//   3. SoRA gate gradients, tiny, are broadcast from DP rank 0 and then TP rank 0, so every
//      replica of every gate is bit-for-bit the same before its proximal step;
//   4. the global gradient norm counts a replicated tensor once (on TP rank 0), a sharded one on
//      every rank, sums over TP and PP, and never over DP (the replicas are equal by then).
#pragma once

#include <memory>
#include <vector>

#include "model/llama.h"
#include "parallel/buckets.h"
#include "parallel/grid.h"

namespace spartan::trainer {

class GradientSync {
 public:
  // `gates`: those of `params` that step 3 makes bit-identical (SoRA's gates). `overlap`: step
  // 1 starts during the backward pass (with DP > 1; arm() says which backward).
  GradientSync(model::Llama& model, parallel::Grid& grid, const model::NamedTensors& params,
               const model::NamedTensors& gates, bool overlap = false,
               int64_t bucket_bytes = parallel::kBucketBytes);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Before the backward pass that completes the step's gradients (the last micro-batch's).
  void arm();
  void reduce();                 // steps 1 and 2
  void agree_gates();            // step 3
  double clip(double max_norm);  // step 4; returns the norm before clipping
  // Buckets of the last reduce() whose DP sum started during the backward pass.
  int64_t started_in_backward() const { return started_in_backward_; }

 private:
  void gradient_ready(size_t i);
  torch::Tensor gradient(size_t i);  // zeros where the backward pass left none

  parallel::Grid& grid_;
  model::NamedTensors params_;
  std::vector<model::TpPlacement> placement_;
  std::vector<bool> gate_;
  std::vector<size_t> slot_;  // params_ index of each DP slot: the parameters in reverse
  std::vector<size_t> slot_of_;
  std::unique_ptr<parallel::BucketedSum> dp_sum_;  // while armed
  int64_t bucket_bytes_;
  bool hooked_ = false;
  int64_t started_in_backward_ = 0;
};

// Number of entries of `params` (this rank's parts) in the whole model: sharded tensors summed
// over TP, every tensor over PP stages. Collective over TP and PP.
int64_t entries_in_model(model::Llama& model, parallel::Grid& grid,
                         const model::NamedTensors& params);

// Every world rank's `value`, in world-rank order, on every rank. Collective over the world.
std::vector<int64_t> gather_per_rank(parallel::Grid& grid, int64_t value);

// The full tensors of `params` (this rank's parts, named as in the model) with their global
// names, gathered over TP and PP onto world rank 0; empty on every other rank. Collective over
// the ranks of DP replica 0.
model::NamedTensors gather_to_root(model::Llama& model, parallel::Grid& grid,
                                   const model::NamedTensors& params);

}  // namespace spartan::trainer
