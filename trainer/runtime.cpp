#include "trainer/runtime.h"

#include <malloc.h>

#include <cstdlib>
#include <string>

#include <torch/torch.h>

namespace spartan::trainer {

void configure_runtime() {
  mallopt(M_MMAP_MAX, 0);                // large blocks from the heap, reused across steps
  mallopt(M_TRIM_THRESHOLD, 1 << 30);    // and not handed back to the kernel at every free
  int threads = 1;
  if (const char* env = std::getenv("SPARTAN_TORCH_THREADS"); env && *env)
    threads = std::max(1, std::atoi(env));
  torch::set_num_threads(threads);
}

}  // namespace spartan::trainer
