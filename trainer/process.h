// Process-wide settings for CPU speed, applied once at start by `spartan` and the benchmarks,
// and the report of what this build and this machine offer (`spartan --version`).
//
// Threads: torch's intra-op pool, which also runs MKL's matrix products in the torch wheel, gets
// SPARTAN_TORCH_THREADS threads, else OMP_NUM_THREADS, else one per core (docs/performance.md
// measured it: one thread halves a LoRA step on 2 cores).
//
// Memory: glibc returns large blocks to the kernel at every free, so each step faulted its
// activations in anew; blocks up to 32 MiB are kept in the heap instead (about 13% on the same
// step). Larger ones are still returned: kept, they fragmented the heap to several times what was
// in use at LLaMA-2-70B's shapes. fit_allocator_to() keeps them too for a model whose projection
// shards are all smaller than that.
#pragma once

#include <cstdint>
#include <string>

namespace spartan::trainer {

void configure_process();

// Once the model is loaded, given its largest projection shard in bytes
// (model::largest_projection_bytes): where that is under 32 MiB (the demo, the LoRA step
// benchmark), blocks of any size stay in the heap, so that a step's large logits are reused
// rather than faulted in again at each step; the holes that made the threshold necessary come
// from temporaries the size of a projection shard, which such a model does not make. Returns
// whether it did. Otherwise blocks from 1 MiB are mapped and handed back when freed, so that the
// process holds what is live, as spartan plan counts it: the heap's free blocks had held 0.15 GB
// more on a rank of a 0.67B model at TP 2, about 0.2 GB at LLaMA-2-70B's shapes (docs/scale.md),
// and the step took 0-9% longer without them.
bool fit_allocator_to(int64_t largest_projection_bytes);

// Lines for `spartan --version`: libtorch's version, whether CUDA code is compiled in (and for
// which architectures), the GPUs this process sees, the MPI library, the torch thread count.
std::string runtime_report();

}  // namespace spartan::trainer
