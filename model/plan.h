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
// The plan names no adapter method: each describes its own costs (MethodCosts, made by
// adapters::Method::costs) in the terms below.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/hf_config.h"

namespace spartan::model {

// One projection of a layer: its global shape and how TP splits it.
struct ProjShape {
  std::string name;  // q k v o gate up down
  double out, in;
  bool column;  // column-parallel (split by outputs), else row-parallel (split by inputs)
};
// A layer's seven projections, in the order q k v o gate up down.
std::vector<ProjShape> projections(const LlamaArch& arch);

// The trainable entries a method puts at one targeted projection: `split` is divided over the TP
// ranks, `whole` is held by every TP rank; `gates` is the part of `whole` that SoRA's gates are.
struct ProjEntries {
  double split = 0, whole = 0, gates = 0;
};

// The sizes that what a method keeps for the backward pass at one targeted projection depends
// on: one micro-batch on one TP rank.
struct ProjActivations {
  double tokens;               // micro-batch × sequence
  double in_local, out_local;  // this rank's input and output widths
  double entries;              // this rank's part of the weight: m×n / tp
  double base_bytes;           // bytes an element of the base (and of the compute)
  double copy;                 // bytes an element of an fp32 copy of a bf16 tensor; 0 in fp32
  double dropped;              // bytes of dropout's output and mask; 0 without dropout
};

// The sizes that the FLOPs a method adds to one optimizer step depend on, over the whole job.
struct StepSizes {
  double tokens;     // of the step
  double targeted;   // entries of the targeted projections, all layers
  double trainable;  // trainable entries
  double products;   // entries of every matrix product of the model (projections and head)
  bool dropout;      // adapter.dropout > 0
};

// FLOPs a method adds to the frozen model's forward and backward-through-the-inputs products,
// and its weight-gradient products.
struct MethodFlops {
  double forward = 0, backward = 0, weight_grad = 0;
};

// What a fine-tuning method costs in memory and FLOPs, in the plan's terms.
class MethodCosts {
 public:
  virtual ~MethodCosts() = default;
  // As `spartan plan` prints it.
  virtual std::string name() const = 0;
  // Every weight trains (full fine-tuning): every projection whatever the targets, the norms,
  // the embedding and the head; the trainable values are the base's own.
  virtual bool trains_everything() const { return false; }
  // Whether the targeted q/k/v and gate/up products keep the norms' outputs for their
  // weight-side gradients ((IA)^3 scales outputs and keeps those instead).
  virtual bool reads_norm_outputs() const { return true; }
  // Trainable entries at one targeted projection, at rank r.
  virtual ProjEntries entries(const ProjShape& p, double r) const = 0;
  // Bytes autograd keeps at one targeted projection beyond the frozen product's own operands.
  virtual double kept(const ProjShape& p, double r, const ProjActivations& a) const { return 0; }
  // Bytes the backward pass holds once, at the largest targeted projection (`entries` of its
  // weight on this rank).
  virtual double backward_workspace(double entries, double base_bytes) const { return 0; }
  // Bytes held for each targeted base entry on the rank (masked full training's zero masks).
  virtual double bytes_per_targeted_entry() const { return 0; }
  virtual MethodFlops flops(const StepSizes& step) const = 0;
};

struct PlanInputs {
  LlamaArch arch;
  int64_t tp = 1, pp = 1, dp = 1;
  std::vector<int64_t> stage_layers;          // layers per stage; empty = even, remainder first
  std::shared_ptr<const MethodCosts> method;  // required: adapters::Method::costs
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};
  int64_t r = 8;
  double dropout = 0;
  int64_t base_bytes = 4;    // 2 bf16 (compute in the same dtype), 4 fp32
  bool sparse_base = false;  // 2:4-compressed storage of the pruned projections
  bool recompute = false;    // keep only each layer's input; recompute in backward
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

// A UsageError for a layout that does not divide the model (or no method's costs).
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
