// PEFT-Ref hook points of the LLaMA model (DESIGN.md §3).
//
// Every adapter method is a torch module that implements one of these interfaces and is attached
// to the model at its workspace; the model's own code never changes for a new method. Attaching
// moves the adapter to the device of the part it hooks into (adapters are made in host memory).
//
//   workspace                         interface           methods
//   a linear projection               LinearAdapter       LoRA, SoRA, SPP, (IA)^3
//   after the attention / FFN block   BlockAdapter        Houlsby, Compacter, tiny-attention
//   the input embeddings              EmbeddingAdapter    prompt tuning
//   every layer's keys and values     KvAdapter           prefix tuning
#pragma once

#include <torch/torch.h>

#include <string>

#include "common/error.h"

namespace spartan::model {

enum class Proj { q, k, v, o, gate, up, down };
constexpr Proj kAllProjections[] = {Proj::q,    Proj::k,  Proj::v,   Proj::o,
                                    Proj::gate, Proj::up, Proj::down};
const char* proj_name(Proj p);  // "q", "k", ..., as in configs
bool parse_proj(const std::string& name, Proj* out);
// The Hugging Face module name of a projection: "model.layers.3.self_attn.q_proj".
std::string projection_name(int64_t layer, Proj p);

// How a projection's weight is split over the tensor-parallel group (DESIGN.md §4):
// output = column-parallel (this rank holds rows [begin, end) of W, i.e. some outputs),
// input = row-parallel (columns [begin, end) of W; the projection's output is a partial sum that
// one all-reduce completes). `holders` > 1 when several ranks hold the same slice (KV heads
// replicated because TP exceeds their number).
enum class TpSplit { none, output, input };
struct TpSlice {
  TpSplit split = TpSplit::none;
  int64_t begin = 0, end = 0;  // along the split dimension, global indices
  int64_t full = 0;            // the dimension's global size
  int64_t holders = 1;
  int64_t size() const { return end - begin; }
};

// How one trainable tensor lives on the ranks of a TP group:
//   replicated  the same values and the same full gradient on every rank
//   partial     the same values, but each rank's gradient is a partial sum: summed over TP
//   sharded     each rank holds its slice along `dim`
struct TpPlacement {
  enum Kind { replicated, partial, sharded } kind = replicated;
  int64_t dim = 0;
};

// Replaces a projection's forward: given the input and the frozen weight (out, in), returns the
// adapted output. Parallel insertion returns x·Wᵀ + Δ(x); rescaling returns (x·Wᵀ) ⊙ l.
class LinearAdapter : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x,       // (B, T, in)
                                const torch::Tensor& weight)  // (out, in), frozen
      = 0;                                                    // -> (B, T, out)

  // Keeps this rank's part of the parameters for a projection split as `slice` says. Adapters
  // are built at full size first, so every layout starts from the same values. Under a row
  // split, forward() sees x and W of this rank's input slice and returns a partial output.
  virtual void shard(const TpSlice& slice) {
    if (slice.split != TpSplit::none)
      throw UsageError("this adapter method does not support tensor parallelism", "[parallel] tp",
                       "set parallel.tp = 1 for it");
  }
  // Placement of the parameter registered as `param` (e.g. "lora_A").
  virtual TpPlacement placement(const std::string& param) const { return {}; }

  // The weight W (out, in, this rank's slice) with this adapter folded in, in W's dtype; with
  // `re_mask`, an additive update has W's zeros imposed again (the SPP paper's LoRA*). An adapter
  // that cannot be folded into its weight throws.
  virtual torch::Tensor merged_weight(const torch::Tensor& W, bool re_mask) const {
    throw Error("this adapter cannot be merged into the base", "merge",
                "export it as an adapter instead");
  }
  // Whether merged_weight() keeps exactly W's zeros, no more and no fewer (SPP), checked before
  // a merged model is saved.
  virtual bool keeps_zero_pattern() const { return false; }
  // The same function with parameters that cannot change it removed (SoRA without its zero-gated
  // ranks, as a LoRA), or nullptr where nothing can be removed.
  virtual std::shared_ptr<LinearAdapter> compacted() const { return nullptr; }
  // Ranks kept by compacted() and the ranks it started from; -1 where it has no ranks to drop.
  virtual int64_t ranks_kept() const { return -1; }
  virtual int64_t ranks() const { return -1; }
};

// Sees a block's (normalised) input and output before the residual addition and returns the
// output to add: direct addition methods return block_output + f(block_output).
class BlockAdapter : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& block_input,   // (B, T, H)
                                const torch::Tensor& block_output)  // (B, T, H)
      = 0;                                                          // -> (B, T, H)
  // Whether one position's output depends on other positions (tiny attention): such a block
  // cannot run on a KV cache's new positions alone.
  virtual bool mixes_positions() const { return false; }
};

// Rewrites the input embeddings; prompt tuning concatenates num_virtual_tokens() learned vectors
// in front. The model drops the outputs of those positions again, so logits stay (B, T, V).
class EmbeddingAdapter : public torch::nn::Module {
 public:
  virtual int64_t num_virtual_tokens() const = 0;
  virtual torch::Tensor forward(const torch::Tensor& embeds)  // (B, T, H)
      = 0;                                                    // -> (B, P + T, H)
};

// Keys and values put in front of every layer's own (prefix tuning): each query also attends to
// them. forward() returns every layer's at once, (num_layers, 2, P, n_kv_heads·head_dim) with
// keys then values, keys not rotated; the model takes each layer's, and under TP its heads. The
// real tokens' rotary positions start at P, as after P cached tokens.
class KvAdapter : public torch::nn::Module {
 public:
  virtual int64_t num_virtual_tokens() const = 0;
  virtual torch::Tensor forward() = 0;
};

}  // namespace spartan::model
