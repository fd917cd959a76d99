// Activation recomputation per decoder layer (train.recompute = "layer"): the forward pass keeps
// only each layer's input; the backward pass runs the layer forward again, with autograd, and
// backpropagates through that. What a layer keeps for its backward (about 34·h + 5·a·T bytes a
// token in fp32, model/plan.h) then lives for one layer at a time instead of for every layer of
// every micro-batch in flight, at the price of a second forward pass of each layer.
//
// The recomputed forward is the first one bit for bit: the random generator of the layer's
// device is rewound to where the first pass found it (adapter dropout draws the same masks) and
// put back afterwards, and the products run in the same precision (the autocast state of the
// first pass is replayed). Tensor-parallel collectives inside the layer run again in the same
// order on every rank of the group, so recomputation needs no coordination.
#pragma once

#include <torch/torch.h>

#include "model/llama.h"

namespace spartan::model {

// layer->forward(x, rope, prefix) whose inner activations are rebuilt in the backward pass.
// Under torch::NoGradGuard (evaluation) it is the plain forward.
torch::Tensor recomputed_layer(DecoderLayerImpl& layer, const torch::Tensor& x, const Rotary& rope,
                               const torch::Tensor& prefix);

}  // namespace spartan::model
