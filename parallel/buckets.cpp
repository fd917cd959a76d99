#include "parallel/buckets.h"

namespace spartan::parallel {
namespace {

void flush(std::vector<torch::Tensor>& bucket, Communicator& group) {
  if (bucket.empty()) return;
  std::vector<torch::Tensor> flat;
  flat.reserve(bucket.size());
  for (const auto& t : bucket) flat.push_back(t.reshape({-1}));
  auto buffer = torch::cat(flat);
  group.all_reduce(buffer);
  int64_t at = 0;
  for (auto& t : bucket) {
    t.copy_(buffer.narrow(0, at, t.numel()).view_as(t));
    at += t.numel();
  }
  bucket.clear();
}

}  // namespace

void all_reduce_buckets(const std::vector<torch::Tensor>& tensors, Communicator& group,
                        int64_t bucket_bytes) {
  if (group.size() == 1 || tensors.empty()) return;
  std::vector<torch::ScalarType> dtypes;
  for (const auto& t : tensors)
    if (std::find(dtypes.begin(), dtypes.end(), t.scalar_type()) == dtypes.end())
      dtypes.push_back(t.scalar_type());
  for (auto dtype : dtypes) {
    std::vector<torch::Tensor> bucket;
    int64_t bytes = 0;
    for (const auto& t : tensors) {
      if (t.scalar_type() != dtype) continue;
      if (!bucket.empty() && bytes + payload_bytes(t) > bucket_bytes) {
        flush(bucket, group);
        bytes = 0;
      }
      bucket.push_back(t);
      bytes += payload_bytes(t);
    }
    flush(bucket, group);
  }
}

}  // namespace spartan::parallel
