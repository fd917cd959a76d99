// Megatron-style tensor-parallel building blocks as autograd functions over a TP group.
// With a group of one rank every function is the plain single-process operation.
//
//   copy_to_group      forward identity,                 backward all-reduce (sum)
//                      at the input of column-parallel linears (replicated x, split outputs)
//   reduce_from_group  forward all-reduce (sum),         backward identity
//                      at the output of row-parallel linears (split inputs, partial outputs)
//   gather_from_group  forward all-gather (last dim),    backward this rank's slice
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "parallel/communicator.h"

namespace spartan::parallel {

torch::Tensor copy_to_group(const torch::Tensor& x, Communicator& group);
torch::Tensor reduce_from_group(const torch::Tensor& x, Communicator& group);
torch::Tensor gather_from_group(const torch::Tensor& x, Communicator& group);

// Embedding lookup in a vocabulary split by rows: this rank holds rows
// [vocab_start, vocab_start + weight.size(0)); ids outside give zeros, and the all-reduce over
// the group completes every row. ids (...) -> (..., H).
torch::Tensor vocab_parallel_embedding(const torch::Tensor& ids, const torch::Tensor& weight,
                                       int64_t vocab_start, Communicator& group);

// Cross-entropy over a vocabulary split by columns of the logits: logits (N, V/size) of this
// rank's vocabulary slice (fp32), targets (N) global ids with -100 = ignored. Returns (N) losses,
// 0 where ignored. No rank builds the full (N, V) logits: only the max, the sum of exponentials
// and the target logit, (N) each, are reduced over the group.
torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits,
                                           const torch::Tensor& targets, int64_t vocab_start,
                                           Communicator& group);

}  // namespace spartan::parallel
