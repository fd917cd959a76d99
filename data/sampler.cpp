#include "data/sampler.h"

#include <random>

#include "common/error.h"

namespace spartan::data {

std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  std::mt19937_64 rng(seed);  // mt19937_64's output is fixed by the standard
  for (int64_t i = n - 1; i > 0; --i) {
    // Unbiased draw in [0, i] by rejection, independent of the library's distributions.
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do r = rng();
    while (r >= limit);
    std::swap(p[i], p[r % bound]);
  }
  return p;
}

Sampler::Sampler(int64_t rows, int64_t global_batch, int64_t dp_rank, int64_t dp_size,
                 uint64_t seed, bool shuffle)
    : rows_(rows),
      global_batch_(global_batch),
      dp_rank_(dp_rank),
      dp_size_(dp_size),
      seed_(seed),
      shuffle_(shuffle) {
  if (global_batch_ % dp_size_ != 0)
    throw UsageError("global batch " + std::to_string(global_batch_) + " does not split over " +
                         std::to_string(dp_size_) + " data-parallel ranks",
                     "[optim] global_batch_size", "use a multiple of parallel.dp");
  if (rows_ < global_batch_)
    throw UsageError("the training data holds " + std::to_string(rows_) +
                         " sequences, fewer than one global batch of " +
                         std::to_string(global_batch_),
                     "[data] / [optim] global_batch_size",
                     "use more data, a shorter data.seq_len or a smaller global batch");
}

void Sampler::refill() {
  if (order_epoch_ == pos_.epoch) return;
  if (shuffle_) {
    order_ = permutation(rows_, seed_ + 0x9e3779b97f4a7c15ULL * (pos_.epoch + 1));
  } else {
    order_.resize(rows_);
    for (int64_t i = 0; i < rows_; ++i) order_[i] = i;
  }
  order_epoch_ = pos_.epoch;
}

std::vector<int64_t> Sampler::next() {
  if (pos_.step >= steps_per_epoch()) {
    ++pos_.epoch;
    pos_.step = 0;
  }
  refill();
  const int64_t local = global_batch_ / dp_size_;
  const int64_t begin = pos_.step * global_batch_ + dp_rank_ * local;
  ++pos_.step;
  return {order_.begin() + begin, order_.begin() + begin + local};
}

void Sampler::restore(const Position& p) { pos_ = p; }

}  // namespace spartan::data
