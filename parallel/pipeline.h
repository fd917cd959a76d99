// Pipeline-parallel schedules over the PP group (rank = stage).
//
// train_1f1b runs the non-interleaved one-forward-one-backward schedule of Megatron-LM
// (PipeDream-Flush): stage s first runs min(PP − s − 1, M) forward passes, then alternates one
// forward and one backward, then drains the remaining backwards; at most PP − s micro-batches are
// in flight on stage s. Activations and their gradients travel by send/recv; a forward paired with
// the following backward's receive uses one send_recv so neighbouring stages cannot deadlock.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "parallel/communicator.h"

namespace spartan::parallel {

struct PipelineStage {
  int64_t micro_batches = 1;
  // Shape of the activation that crosses a stage boundary for micro-batch i.
  std::function<std::vector<int64_t>(int64_t i)> activation_shape;
  // Its dtype and device (the model's base dtype, on the rank's device).
  torch::TensorOptions activation_options = torch::kFloat32;
  // Runs this stage on micro-batch i. `input` is undefined on the first stage. Returns the
  // activation to send on, or on the last stage a scalar to call backward() on.
  std::function<torch::Tensor(int64_t i, const torch::Tensor& input)> forward;
  // Optional: called just before micro-batch i's backward pass.
  std::function<void(int64_t i)> before_backward;
};

// Forward and backward of every micro-batch; gradients accumulate in the parameters.
void train_1f1b(const PipelineStage& stage, Communicator& pp);
// Forward of every micro-batch in order, without autograd (evaluation).
void forward_only(const PipelineStage& stage, Communicator& pp);

}  // namespace spartan::parallel
