#include "parallel/buckets.h"

#include <algorithm>

namespace spartan::parallel {

BucketedSum::BucketedSum(Communicator& group, const std::vector<Slot>& slots,
                         std::function<torch::Tensor(size_t)> tensor, int64_t bucket_bytes,
                         int in_flight)
    : group_(group),
      tensor_(std::move(tensor)),
      in_flight_(std::max(1, in_flight)),
      bucket_of_(slots.size()),
      is_ready_(slots.size(), false) {
  // One pass per dtype, in the order the dtypes first appear; slots keep their order within.
  std::vector<torch::ScalarType> dtypes;
  for (const auto& s : slots)
    if (std::find(dtypes.begin(), dtypes.end(), s.dtype) == dtypes.end()) dtypes.push_back(s.dtype);
  for (auto dtype : dtypes) {
    int64_t bytes = 0;
    bool open = false;
    for (size_t i = 0; i < slots.size(); ++i) {
      if (slots[i].dtype != dtype) continue;
      const int64_t b = slots[i].numel * int64_t(c10::elementSize(dtype));
      if (!open || bytes + b > bucket_bytes) {
        buckets_.emplace_back();
        bytes = 0;
        open = true;
      }
      buckets_.back().slots.push_back(i);
      bucket_of_[i] = buckets_.size() - 1;
      bytes += b;
    }
  }
}

void BucketedSum::ready(size_t slot) {
  if (is_ready_[slot]) return;
  is_ready_[slot] = true;
  ++buckets_[bucket_of_[slot]].ready;
  while (next_ < buckets_.size() && buckets_[next_].ready == buckets_[next_].slots.size()) {
    start(buckets_[next_++]);
    ++started_early_;
  }
  for (size_t b : started_) buckets_[b].op->test();  // lets MPI move the started ones on
}

void BucketedSum::start(Bucket& b) {
  if (int(started_.size()) >= in_flight_) complete_oldest();
  std::vector<torch::Tensor> flat;
  for (size_t i : b.slots) {
    b.tensors.push_back(tensor_(i));
    flat.push_back(b.tensors.back().reshape({-1}));
  }
  b.flat = flat.size() == 1 && b.tensors[0].is_contiguous() ? b.tensors[0] : torch::cat(flat);
  b.op = group_.start_all_reduce(b.flat);
  started_.push_back(size_t(&b - buckets_.data()));
}

void BucketedSum::complete_oldest() {
  Bucket& b = buckets_[started_.front()];
  started_.pop_front();
  b.op->wait();
  if (!b.flat.is_same(b.tensors[0])) {
    int64_t at = 0;
    for (auto& t : b.tensors) {
      t.copy_(b.flat.narrow(0, at, t.numel()).view_as(t));
      at += t.numel();
    }
  }
  b.tensors.clear();
  b.flat = torch::Tensor();
  b.op.reset();
}

void BucketedSum::finish() {
  while (next_ < buckets_.size()) start(buckets_[next_++]);
  while (!started_.empty()) complete_oldest();
}

void all_reduce_buckets(const std::vector<torch::Tensor>& tensors, Communicator& group,
                        int64_t bucket_bytes) {
  if (group.size() == 1 || tensors.empty()) return;
  std::vector<BucketedSum::Slot> slots;
  for (const auto& t : tensors) slots.push_back({t.numel(), t.scalar_type()});
  BucketedSum sum(
      group, slots, [&](size_t i) { return tensors[i]; }, bucket_bytes, 1);
  sum.finish();
}

}  // namespace spartan::parallel
