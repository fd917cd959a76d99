// What a run will need, estimated from the shapes before anything is allocated, and what the
// machine has. No torch here.
//
// The estimate is a lower bound of the memory one rank holds at its peak: the frozen base shard,
// the trainable parameters with their gradients and AdamW moments, the activations one stage
// keeps for its in-flight micro-batches, and the head's logits. A run above the limit cannot
// succeed; it is refused with the numbers, instead of failing hours later in an allocation
// (or, with absurd sizes, at once with a backtrace).
#pragma once

#include <cstdint>
#include <string>

#include "model/hf_config.h"

namespace spartan::model {

struct MemoryInputs {
  int64_t tp = 1, pp = 1;
  int64_t base_dtype_bytes = 4;  // 4 fp32, 2 bf16
  int64_t seq_len = 0;           // 0: no activations (load only)
  int64_t micro_batch = 1;
  int64_t micro_batches = 1;    // per optimizer step and replica: 1F1B keeps min(pp, this)
  int64_t adapter_r = 0;        // low-rank methods: r on each targeted projection
  int64_t adapter_targets = 7;  // projections per layer carrying an adapter
  bool full = false;            // full fine-tuning: every base weight trains
};

struct MemoryEstimate {  // bytes on one rank
  double base = 0, trainable = 0, activations = 0, logits = 0;
  double total() const { return base + trainable + activations + logits; }
  std::string describe() const;  // "1.23 TB (base 1.2 TB, trainable 3 GB, ...)"
};

MemoryEstimate estimate_memory(const LlamaArch& arch, const MemoryInputs& in);

// The memory this process may use: the cgroup's memory.max where one is set, else physical
// memory; divided among the ranks on this node (Open MPI's or Slurm's local size).
double machine_memory_per_rank();

// Refuses (spartan::UsageError naming `where`) an estimate above `limit_bytes`.
void check_memory(const MemoryEstimate& need, double limit_bytes, const std::string& where);

// "1.5 GB", "3.2 TB": decimal units.
std::string format_bytes(double bytes);

}  // namespace spartan::model
