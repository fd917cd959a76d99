// Gradient reduction in flat buckets: many small tensors travel as a few large messages, and a
// bucket's sum can start while the backward pass is still producing the others.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace spartan::parallel {

constexpr int64_t kBucketBytes = 25 << 20;

// Sums over `group`, in place, the tensors that `tensor(i)` returns for the slots i = 0, 1, ...
// of `shapes` (each slot's element count and dtype, fixed), packed in slot order into buckets of
// at most `bucket_bytes` of one dtype (a larger tensor travels alone). `ready(i)` says that slot
// i holds its final value; each bucket whose slots are all ready starts its sum, in bucket order
// (so every rank starts them in the same order whatever order its slots become ready in), with
// at most `in_flight` started and not finished (each holds a copy of its tensors). finish()
// starts the rest and waits for all; `tensor(i)` is called once a slot, when its bucket starts,
// and the sum is copied back into what it returned.
class BucketedSum {
 public:
  struct Slot {
    int64_t numel;
    torch::ScalarType dtype;
  };
  BucketedSum(Communicator& group, const std::vector<Slot>& slots,
              std::function<torch::Tensor(size_t)> tensor, int64_t bucket_bytes = kBucketBytes,
              int in_flight = 4);
  void ready(size_t slot);
  void finish();
  // Buckets that started before finish() (from ready()).
  int64_t started_early() const { return started_early_; }

 private:
  struct Bucket {
    std::vector<size_t> slots;
    size_t ready = 0;
    std::vector<torch::Tensor> tensors;  // what tensor() returned, where the sum goes back
    torch::Tensor flat;
    std::unique_ptr<Pending> op;
  };
  void start(Bucket& b);
  void complete_oldest();

  Communicator& group_;
  std::function<torch::Tensor(size_t)> tensor_;
  int in_flight_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<bool> is_ready_;
  size_t next_ = 0;             // the next bucket to start
  std::deque<size_t> started_;  // started and not yet copied back, oldest first
  int64_t started_early_ = 0;
};

// Sums `tensors` in place over `group`, packed into contiguous buffers of at most
// `bucket_bytes` (a tensor larger than that travels alone). Tensors of one dtype share buckets.
void all_reduce_buckets(const std::vector<torch::Tensor>& tensors, Communicator& group,
                        int64_t bucket_bytes = kBucketBytes);

}  // namespace spartan::parallel
