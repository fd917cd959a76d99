// `spartan prune`: a dense model folder -> a pruned model folder (same files and layout, zeros
// written in place) and a report.
//
// Sequential calibration as Wanda's and SparseGPT's reference code: the calibration sequences
// flow through the model one layer at a time; each layer is calibrated on the outputs of the
// already pruned layers before it, its target projections are pruned, and its pruned outputs
// feed the next layer. Memory: one layer's weights (fp32) plus the calibration activations.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config.h"
#include "model/hooks.h"
#include "parallel/communicator.h"
#include "prune/masks.h"

namespace spartan::prune {

struct PruneOptions {
  PruneMethod method = PruneMethod::wanda;
  double sparsity = 0.5;  // unstructured ratio (N:M patterns imply theirs)
  Pattern pattern;
  std::vector<model::Proj> targets;
  int64_t blocksize = 128;
  double percdamp = 0.01;
  int64_t batch = 8;  // sequences per forward pass
};

struct TensorResult {
  std::string name;
  double sparsity = 0;
  bool pattern_ok = true;
};

struct PruneReport {
  PruneOptions options;
  std::vector<TensorResult> tensors;
  double target_sparsity = 0;  // zeros over all pruned tensors
  int64_t calibration_sequences = 0, calibration_tokens = 0;
  double loss_before = 0, loss_after = 0;  // held-out, when evaluated
  bool evaluated = false;
  double seconds = 0;
  nlohmann::json to_json() const;
  std::string table() const;
};

// Prunes in_folder into out_folder (created; must differ) with calibration token rows
// calib_ids (N, T). When eval_ids/eval_labels are defined, the held-out loss is measured
// layer by layer before and after.
//
// With a communicator of several ranks (every rank calls this), the layers are split evenly
// over the ranks in order: rank r waits for the calibration activations from rank r-1, prunes
// its layers, sends the activations on; rank 0 then writes the output folder and the report
// (returned on rank 0). The result is the same as on one process, byte for byte.
PruneReport prune_folder(const std::string& in_folder, const std::string& out_folder,
                         const PruneOptions& options, const torch::Tensor& calib_ids,
                         const torch::Tensor& eval_ids = {}, const torch::Tensor& eval_labels = {},
                         parallel::Communicator* ranks = nullptr);

}  // namespace spartan::prune
