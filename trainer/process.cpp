#include "trainer/process.h"

#include <malloc.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdlib>
#include <string>
#ifdef SPARTAN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "common/memory_use.h"
#include "parallel/mpi.h"

namespace spartan::trainer {

namespace {
constexpr int64_t kHeapBlockLimit = 32 << 20;  // glibc's largest mmap threshold
constexpr int64_t kMappedFrom = 1 << 20;       // a large model's blocks from here are mapped
}  // namespace

void configure_process() {
  // Blocks up to 32 MiB (glibc's largest threshold) come from the heap and are reused across
  // steps instead of being faulted in again at each; larger ones (a 70B shard's weight-sized
  // temporaries) are mapped and handed back when freed, so that the holes they leave cannot grow
  // the heap to several times what is in use.
  mallopt(M_MMAP_MAX, 65536);  // glibc's default: mapping allowed (fit_allocator_to may stop it)
  mallopt(M_MMAP_THRESHOLD, kHeapBlockLimit);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // the heap is not handed back at every free
  // The wheel's libtorch runs its matrix products in MKL on torch's own OpenMP threads, so one
  // count sizes both (docs/performance.md): SPARTAN_TORCH_THREADS, else OMP_NUM_THREADS (what
  // `spartan launch` sets per rank), else torch's default (the physical cores).
  for (const char* name : {"SPARTAN_TORCH_THREADS", "OMP_NUM_THREADS"})
    if (const char* env = std::getenv(name); env && std::atoi(env) > 0) {
      torch::set_num_threads(std::atoi(env));
      break;
    }
}

bool fit_allocator_to(int64_t largest_projection_bytes) {
  if (largest_projection_bytes >= kHeapBlockLimit) {
    return_large_blocks_to_kernel(kMappedFrom);
    return false;
  }
  keep_large_blocks_in_heap();
  return true;
}

namespace {

// "none visible", or the count with each device's name, compute capability and memory.
std::string gpu_line() {
  const auto count = torch::cuda::device_count();
  if (count == 0) return "none visible";
  std::string line = std::to_string(count) + " visible";
#ifdef SPARTAN_HAVE_CUDA
  for (int i = 0; i < static_cast<int>(count); ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    line += (i == 0 ? ": " : ", ") + std::string(p.name) + " (sm_" + std::to_string(p.major) +
            std::to_string(p.minor) + ", " +
            std::to_string(static_cast<long long>(p.totalGlobalMem >> 20)) + " MiB)";
  }
  int driver = 0;
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0)
    line += "; driver supports CUDA " + std::to_string(driver / 1000) + "." +
            std::to_string(driver % 1000 / 10);
#endif
  return line;
}

}  // namespace

std::string runtime_report() {
  std::string r = "libtorch " TORCH_VERSION "\n";
#ifdef SPARTAN_HAVE_CUDA
  r += "CUDA code  compiled in (sm_80, sm_90; CUDA runtime " +
       std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10) +
       ")\n";
#else
  r += "CUDA code  not compiled in (CPU-only build)\n";
#endif
  r += "GPUs       " + gpu_line() + "\n";
  r += "MPI        " + parallel::mpi_library_version() + "\n";
  r += "threads    " + std::to_string(torch::get_num_threads()) + " torch thread(s)";
  return r;
}

}  // namespace spartan::trainer
