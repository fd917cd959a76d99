// `spartan plan`: what a configured run needs on every rank and what one optimizer step costs,
// predicted from the shapes alone (nothing is loaded). No torch here.
//
// Memory per rank, per pipeline stage (they differ: the first holds the embedding and the most
// in-flight micro-batches of 1F1B, the last the head and the loss):
//   base         the frozen shard, in the base dtype, dense or 2:4-compressed (half the values
//                plus a 2-bit index per kept value: 1/8 byte per original element)
//   trainable    fp32 values, fp32 gradients and two fp32 AdamW moments: 16 bytes an entry
//   activations  what autograd keeps of each layer for the backward pass, counted from the
//                tensors Spartan's layer saves (model/llama.cpp and the adapters), for the
//                in-flight micro-batches; with recomputation, the layer inputs and one layer
//   logits       the head: the final norm's fp32 copy, the logits, their fp32 log-softmax and
//                its gradient
//   buffers      communication buffers: 0.25 GB a communicating group, and one activation
//   allowance    CUDA context and allocator slack: 2 GB plus 10% of activations and logits
// FLOPs per step: forward, backward through the inputs, and the weight-gradient products (the
// whole base for full training; each targeted projection's m×n product for SPP, whose trained
// W_α and W_β reach the loss through a full-size effective weight).
// Bytes per step: the payload each rank contributes to its TP, PP and DP collectives, counted as
// the communicators count (parallel/communicator.h); tests compare them with measured traffic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/hf_config.h"

namespace spartan::model {

struct PlanInputs {
  LlamaArch arch;
  int64_t tp = 1, pp = 1, dp = 1;
  std::vector<int64_t> stage_layers;  // layers per stage; empty = even, remainder first
  std::string method = "lora";        // lora, sora, spp, ia3, full
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};
  int64_t r = 8;
  double dropout = 0;
  std::string spp_form = "effective";  // or "blocked"
  bool spp_recompute_weight = true;    // effective form: W_eff rebuilt in backward, not kept
  bool keep_base_zeros = false;        // full with adapter.merge = "masked": a mask per target
  int64_t base_bytes = 4;              // 2 bf16 (compute in the same dtype), 4 fp32
  bool sparse_base = false;            // 2:4-compressed storage of the pruned projections
  bool recompute = false;              // keep only each layer's input; recompute in backward
  int64_t seq_len = 1024, micro_batch = 1, global_batch = 1;
};

struct StagePlan {
  int64_t stage = 0, first_layer = 0, layers = 0, in_flight = 0;
  bool embedding = false, head = false;
  // Bytes on one rank of this stage.
  double base = 0, trainable = 0, activations = 0, logits = 0, buffers = 0, allowance = 0;
  double trainable_entries = 0;  // on this rank
  double total() const { return base + trainable + activations + logits + buffers + allowance; }
  // Payload bytes one rank of this stage contributes per optimizer step.
  double tp_bytes = 0, pp_bytes = 0, dp_bytes = 0;
};

struct Plan {
  PlanInputs in;
  std::vector<StagePlan> stages;
  int64_t micro_batches = 0;        // per DP replica and step
  double base_parameters = 0;       // of the whole model
  double trainable_entries = 0;     // of the whole model
  double activation_per_layer = 0;  // bytes, one micro-batch, without recomputation
  double head_kept = 0;             // bytes the last stage keeps for one micro-batch's backward
  double flops_forward = 0, flops_backward = 0, flops_weight_grad = 0;  // per step, all ranks
  double tokens_per_step = 0;
  double flops() const { return flops_forward + flops_backward + flops_weight_grad; }
  const StagePlan& largest() const;  // the stage with the most memory
};

// A UsageError for a method the plan does not model or a layout that does not divide the model.
Plan make_plan(const PlanInputs& in);

// Seconds per step on `gpus` GPUs of `peak_flops` each at model FLOPs utilisation `mfu`.
double step_seconds(const Plan& plan, double peak_flops, double mfu);

// Seconds one step spends communicating, none of it hidden behind compute (an upper bound):
// ring all-reduces, 2(n-1)/n of the payload on each link, TP over NVLink at `nvlink_bytes_s`,
// PP and DP over the network at `network_bytes_s`; the busiest stage counts.
double comm_seconds(const Plan& plan, double nvlink_bytes_s, double network_bytes_s);

// Layouts (tp within a node, pp dividing the layers, dp the rest) of `gpus` GPUs that fit
// `gpu_bytes` each, fastest first: compute at `mfu` with the 1F1B bubble, plus communication.
struct LayoutChoice {
  int64_t tp, pp, dp;
  double peak_bytes, compute_seconds, comm_seconds;
  double step_seconds() const { return compute_seconds + comm_seconds; }
};
std::vector<LayoutChoice> suggest_layouts(const PlanInputs& in, int64_t gpus, int64_t gpus_per_node,
                                          double gpu_bytes, double peak_flops, double mfu,
                                          double nvlink_bytes_s, double network_bytes_s);

// The plan as the text `spartan plan` prints.
std::string describe_plan(const Plan& plan, double gpu_bytes, double peak_flops, double mfu);

}  // namespace spartan::model
