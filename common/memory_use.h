// This process's memory as the kernel counts it (Linux /proc): what the trainer logs, and what
// the streaming merge bounds and reports.
#pragma once

#include <cstdint>

namespace spartan {

// Resident memory now, in bytes (anonymous and file-backed pages: /proc/self/statm).
int64_t resident_bytes();

// The peak resident memory since the process started or since the last reset_peak_resident()
// (VmHWM), in bytes; 0 where the kernel does not report it.
int64_t peak_resident_bytes();

// Starts a new peak at the current resident memory (writes 5 to /proc/self/clear_refs); false
// where the kernel refuses, and the peak then still counts from the process's start.
bool reset_peak_resident();

// Large blocks (from `threshold` bytes) are mapped for each allocation and handed back to the
// kernel when freed, so that a process that streams tensors of varying sizes keeps no freed
// memory. The merge sets this; the trainer keeps blocks up to 32 MiB in the heap and returns
// larger ones, unless every projection shard of its model is smaller (trainer/process.h).
void return_large_blocks_to_kernel(int64_t threshold = 1 << 20);

// Every block, however large, from the heap, and kept there when freed: for a process that makes
// the same tensors over and over (`spartan prune`, layer after layer), which then reuse it.
void keep_large_blocks_in_heap();

}  // namespace spartan
