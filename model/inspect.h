// `spartan model info`: what a model folder holds, measured tensor by tensor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/hf_config.h"
#include "model/llama.h"

namespace spartan::model {

struct TensorStats {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  int64_t zeros = 0;
  // For 2-D tensors: the tightest N:M pattern along the input (last) dimension that every group
  // of M satisfies, for M in {4, 8, 16}, e.g. "2:4"; empty when no group size admits one.
  std::string nm;
  double sparsity() const { return numel ? static_cast<double>(zeros) / numel : 0.0; }
};

struct ModelStats {
  std::string folder;
  LlamaArch arch;
  std::vector<TensorStats> tensors;  // sorted by name
  int64_t num_parameters = 0;        // counted from the stored tensors
  int64_t zeros = 0;
  int64_t linear_parameters = 0, linear_zeros = 0;  // the seven projections of every layer
};

// Reads config.json and every tensor (one at a time, so memory stays at one tensor).
ModelStats inspect_model(const std::string& folder);

// The N:M pattern every group of m consecutive entries along the last dim obeys: the largest
// count of non-zeros in any group; m must divide the last dim.
int64_t max_nonzeros_per_group(const std::vector<float>& values, int64_t cols, int64_t m);

std::string format_model_stats(const ModelStats& stats);

// The zeros among the weights of `projections` in the layers this rank holds (its TP slices).
struct ZeroCount {
  int64_t zeros = 0, total = 0;
  double fraction() const { return total ? double(zeros) / double(total) : 0.0; }
};
ZeroCount projection_zeros(Llama& model, const std::vector<Proj>& projections);

// The bytes of the largest projection weight this rank holds (its shard).
int64_t largest_projection_bytes(Llama& model);

}  // namespace spartan::model
