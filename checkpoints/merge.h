// The offline merge (DESIGN.md §5): checkpoint shards + the base model folder -> a Hugging Face
// model folder with the adapter folded into the weights. One process, no MPI. It streams: each
// output file is written tensor by tensor as the base tensor is read and merged, and the base's
// mapped pages are dropped after each tensor, so the memory it adds is bounded by the largest
// tensor (merge_memory_bound), whatever the model's size.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"

namespace spartan::checkpoints {

struct MergedTensor {
  std::string name;
  double zeros_before = 0, zeros_after = 0;  // fractions
  int64_t ranks_kept = -1, ranks = -1;       // SoRA
};

struct MergeReport {
  std::string checkpoint, out;
  std::string adapter;  // the compact adapter in PEFT's layout, where PEFT has the method
  std::string method;
  bool masked_merge = false;  // LoRA*: the base's zeros re-imposed on the merged weights
  int64_t step = 0;
  std::vector<MergedTensor> merged;
  // Each merged projection against its adapted form (base + adapter from the checkpoint) on a
  // few random inputs, and the adapted model against the merged folder on a bounded slice (the
  // first layer, then the last layer and the head): the largest absolute differences; < 0 when
  // not measured. LoRA*'s masked merge differs from its adapter by design.
  double max_projection_diff = -1;
  double max_logit_diff = -1;
  int64_t start_resident_bytes = 0;       // before the first tensor (libtorch, mapped headers)
  int64_t peak_resident_bytes = 0;        // while streaming the tensors
  int64_t check_peak_resident_bytes = 0;  // during the logit check
  int64_t largest_tensor_bytes = 0;       // in fp32
  int64_t memory_bound_bytes = 0;         // merge_memory_bound() of this merge
};

// A merged projection is computed in blocks of output rows of at most `block_bytes` in fp32: the
// base rows are read from the mapped file block by block, and the output tensor is the only
// full-size allocation. What the merge adds to the process's resident memory is then at most
// twice the largest tensor in fp32 (the output tensor and the base's mapped pages, or full
// fine-tuning's fp32 tensor and its cast), eight blocks of temporaries and a fixed 32 MiB for the
// libraries' own buffers; the test checks it on a model several times larger.
inline int64_t merge_memory_bound(int64_t largest_tensor_bytes, int64_t block_bytes) {
  return (32ll << 20) + 2 * largest_tensor_bytes + 8 * block_bytes;
}

struct MergeOptions {
  bool check_logits = true;  // the two checks of MergeReport
  // `out` must be new or empty, or `force` set (then it is replaced whole); it may not be, or
  // hold, the base model folder, the run or the tokenizer. The folder is written beside `out` and
  // renamed into place when complete, so a failure leaves what was there.
  bool force = false;
  // dense or masked (LoRA*) in place of the run's adapter.merge, for LoRA and SoRA; none = the
  // run's.
  std::optional<MergeForm> merge;
  uint64_t max_shard_bytes = 5ull << 30;  // per output file (HF's 5 GB)
  int64_t block_bytes = 4ll << 20;        // rows merged at a time (fp32 bytes)
};

// `run_dir` holds config.resolved.toml and checkpoints/; step < 0 means `latest`. The logit
// check holds one layer with the embedding or the head at a time, in fp32.
MergeReport merge_run(const std::string& run_dir, int64_t step, const std::string& out,
                      const MergeOptions& options = {});

// The trained adapter of a run's checkpoint in PEFT's layout (LoRA; SoRA as a LoRA of its
// non-zero ranks; (IA)^3), from the checkpoint's shards alone: no base weight is read. `out` is
// the run's own output folder and is replaced whole. Returns the ranks kept of adapters that drop
// ranks (SoRA) and sets *total to the ranks they had; 0 of 0 for other methods.
int64_t export_adapter(const std::string& run_dir, int64_t step, const std::string& out,
                       int64_t* total = nullptr);

}  // namespace spartan::checkpoints
