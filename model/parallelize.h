// Tensor parallelism as styles applied to a built model (DESIGN.md §4, Megatron-LM's scheme),
// the way torchtitan's parallelize step applies them to a plain module: the model's classes
// compute as if they held every weight, and this file alone decides what each rank of the TP
// group keeps.
//
//   column-parallel  q, k, v, gate, up: split by outputs (whole heads, intermediate units); the
//                    input they share is replicated, its gradient summed over the group
//   row-parallel     o, down: split by inputs; the partial outputs summed over the group
//   vocabulary       the embedding and the LM head: split by vocabulary rows; the embedding's
//                    lookups and the head's softmax combine over the group
//   fewer KV heads   than ranks: each rank holds the KV head its query heads use, the same slice
//                    on `holders` ranks (its adapters' gradients are summed over them)
//
// Another style (sequence parallelism of the norms, say) is another function here, and its
// autograd primitives another file in parallel/; the model's classes do not change.
#pragma once

#include "model/hf_config.h"
#include "parallel/communicator.h"

namespace spartan::model {

class LlamaImpl;

// Cuts `model`'s modules for this rank of `tp` (size > 1). Called between building the modules
// and allocating their weights (LlamaImpl's constructor), so no rank ever allocates a whole
// weight. A size that does not divide the heads, the intermediate size or the vocabulary, or
// that the KV heads neither divide nor are divided by, is a UsageError naming [parallel] tp.
void parallelize(LlamaImpl& model, parallel::Communicator& tp);

}  // namespace spartan::model
