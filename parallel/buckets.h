// Gradient reduction in flat buckets: many small tensors travel as a few large messages.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace spartan::parallel {

// Sums `tensors` in place over `group`, packed into contiguous buffers of at most
// `bucket_bytes` (a tensor larger than that travels alone). Tensors of one dtype share buckets.
void all_reduce_buckets(const std::vector<torch::Tensor>& tensors, Communicator& group,
                        int64_t bucket_bytes = 25 << 20);

}  // namespace spartan::parallel
