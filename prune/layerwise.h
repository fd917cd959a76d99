// Running a model folder one decoder layer at a time, so that a model far larger than memory
// can be calibrated, pruned and evaluated: only the current layer's weights and the activations
// of the calibration (or evaluation) sequences are held.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>

#include "model/hf_config.h"
#include "model/llama.h"
#include "model/weights.h"

namespace spartan::prune {

// Builds decoder layer `index` in fp32 from the folder's tensors.
model::DecoderLayer load_layer(const model::WeightStore& store, const model::LlamaArch& arch,
                               int64_t index);

// Token embeddings (N, T, H) in fp32 of the rows of `ids` (N, T); reads only the rows of the
// embedding table that the ids use.
torch::Tensor embed(const model::WeightStore& store, const torch::Tensor& ids);

// Runs `hidden` (N, T, H) through a layer in chunks of `batch` rows; returns the outputs.
torch::Tensor run_layer(model::DecoderLayer& layer, const model::LlamaArch& arch,
                        const torch::Tensor& hidden, int64_t batch);

// Mean next-token loss of `ids` under `labels` (N, T) computed layer by layer from the folder.
double layerwise_loss(const model::WeightStore& store, const model::LlamaArch& arch,
                      const torch::Tensor& ids, const torch::Tensor& labels, int64_t batch);

}  // namespace spartan::prune
