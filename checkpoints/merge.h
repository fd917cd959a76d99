// The offline merge (DESIGN.md §5): checkpoint shards + the base model folder -> a Hugging Face
// model folder with the adapter folded into the weights. One process, no MPI. It streams: each
// output file is written tensor by tensor as the base tensor is read and merged, so the peak
// memory is about two of the largest tensors, whatever the model's size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spartan::checkpoints {

struct MergedTensor {
  std::string name;
  double zeros_before = 0, zeros_after = 0;  // fractions
  int64_t ranks_kept = -1, ranks = -1;        // SoRA
};

struct MergeReport {
  std::string checkpoint, out;
  std::string adapter;  // the compact adapter in PEFT's layout, where PEFT has the method
  std::string method;
  int64_t step = 0;
  std::vector<MergedTensor> merged;
  double max_logit_diff = -1;  // adapted vs merged on a sample; < 0 when not measured
  int64_t peak_resident_bytes = 0;   // while streaming
  int64_t start_resident_bytes = 0;  // before the first tensor (libtorch, mapped files)
  int64_t largest_tensor_bytes = 0;
};

// `run_dir` holds config.resolved.toml and checkpoints/; step < 0 means `latest`. With
// `check_logits` the adapted and the merged model are compared on a sample (both held in memory:
// for models that fit).
// Output files hold at most `max_shard_bytes` each (HF's 5 GB by default).
// `out` must be new or empty, or `force` set (then it is replaced whole); it may not be, or
// hold, the base model folder, the run or the tokenizer. The folder is written beside `out` and
// renamed into place when complete, so a failure leaves what was there.
MergeReport merge_run(const std::string& run_dir, int64_t step, const std::string& out,
                      bool check_logits, bool force = false,
                      uint64_t max_shard_bytes = 5ull << 30);

// The trained adapter of a run's checkpoint in PEFT's layout (LoRA; SoRA as a LoRA of its
// non-zero ranks; (IA)^3), from the checkpoint's shards alone: no base weight is read. `out` is
// the run's own output folder and is replaced whole. Returns the SoRA ranks kept (-1 for other
// methods).
int64_t export_adapter(const std::string& run_dir, int64_t step, const std::string& out);

}  // namespace spartan::checkpoints
