// Process-wide settings for CPU speed, applied once at start by `spartan` and the benchmarks.
//
// Threads: Debian's libtorch runs matrix products in OpenBLAS's own pthread pool and
// element-wise work in an OpenMP pool. With both sized to the cores, OpenMP's idle threads spin
// and yield while OpenBLAS works, and a LoRA step ran 2.8x slower (docs/performance.md). So
// torch's intra-op pool gets SPARTAN_TORCH_THREADS threads (default 1) and OpenBLAS keeps its
// own setting (OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS, else all cores).
//
// Memory: glibc returns large blocks to the kernel at every free, so each step faulted its
// activations in anew; large blocks are kept in the heap instead (about 13% on the same step).
#pragma once

namespace spartan::trainer {

void configure_runtime();

}  // namespace spartan::trainer
