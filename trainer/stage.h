// The model's side of a pipeline step: rows (ids, labels) cut into micro-batches, each run
// through this rank's part of the model (embedding on the first stage, the stage's layers, the
// LM head and its losses on the last). The rows go to the model's device once, and every forward
// pass runs in a parallel::ComputeScope of the model's compute dtype.
#pragma once

#include <cstdint>
#include <functional>

#include "model/llama.h"
#include "parallel/pipeline.h"

namespace spartan::trainer {

// On the last stage, `on_losses(i, losses)` receives micro-batch i's token losses (b, T-1) and
// returns the scalar that train_1f1b backpropagates (forward_only ignores it).
using LossesFn = std::function<torch::Tensor(int64_t i, const torch::Tensor& losses)>;

parallel::PipelineStage model_stage(model::Llama& model, const torch::Tensor& ids,
                                    const torch::Tensor& labels, int64_t micro_batch,
                                    LossesFn on_losses);

}  // namespace spartan::trainer
