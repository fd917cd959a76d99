// A deterministic, resumable sampler over fixed-length rows, split over data-parallel ranks.
//
// Each epoch is a seeded permutation of the rows (or the identity when shuffle is off). A step
// takes the next global_batch rows of it; DP rank r gets the r-th contiguous part of those, so the
// union over ranks is exactly what one rank would take alone with the same global batch.
// A trailing part of an epoch smaller than a global batch is dropped.
#pragma once

#include <cstdint>
#include <vector>

namespace spartan::data {

// Portable Fisher-Yates permutation of [0, n) from a 64-bit seed (same on every platform).
std::vector<int64_t> permutation(int64_t n, uint64_t seed);

class Sampler {
 public:
  struct Position {
    int64_t epoch = 0;
    int64_t step = 0;  // steps taken within the epoch
    bool operator==(const Position& o) const { return epoch == o.epoch && step == o.step; }
  };

  Sampler(int64_t rows, int64_t global_batch, int64_t dp_rank, int64_t dp_size, uint64_t seed,
          bool shuffle);

  int64_t steps_per_epoch() const { return rows_ / global_batch_; }
  // This rank's rows of the next global batch (global_batch / dp_size of them).
  std::vector<int64_t> next();
  Position position() const { return pos_; }
  void restore(const Position& p);

 private:
  void refill();
  int64_t rows_, global_batch_, dp_rank_, dp_size_;
  uint64_t seed_;
  bool shuffle_;
  Position pos_;
  std::vector<int64_t> order_;  // permutation of the current epoch
  int64_t order_epoch_ = -1;
};

}  // namespace spartan::data
