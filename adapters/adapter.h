// Attaching the configured method to a model, and what it trains.
//
// Methods: "lora", "sora", "spp", "ia3" (linear projections), "houlsby", "compacter",
// "tiny_attention" (after blocks), "prompt" (input embeddings), "prefix" (every layer's keys
// and values) and "full" (every base weight trainable, no adapter: the demo pretrains its tiny
// base this way).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "common/config.h"
#include "model/llama.h"

namespace spartan::adapters {

struct Attached {
  std::string method;
  model::NamedTensors trainable;  // names as in model->named_parameters()
  int64_t num_trainable() const;
};

// Attaches [adapter] to every layer's target projections (fresh initialisation from the
// current torch seed) and freezes or unfreezes the base as the method needs.
Attached attach(model::Llama& model, const AdapterConfig& config);

// A fresh adapter of the configured method for projection p of shape (out, in), at full size.
std::shared_ptr<model::LinearAdapter> make_linear_adapter(const AdapterConfig& config,
                                                          model::Proj p, int64_t out, int64_t in);

// The weight W with `adapter` folded in by its method's rule (see merge_into_base); an adapter
// that cannot be merged is an Error.
torch::Tensor merged_weight(const model::LinearAdapter& adapter, const torch::Tensor& W,
                            const std::string& lora_merge);

// Folds every attached adapter into its projection's weight and detaches it: SPP as W̃ + s·W̃'
// (zeros stay zeros), (IA)^3 as W ⊙ l (zeros stay zeros), LoRA and SoRA as W + Δ, or with
// lora_merge "masked" re-masked with the base's zero pattern (the SPP paper's LoRA*).
void merge_into_base(model::Llama& model, const std::string& lora_merge);

// How the merged SPP weights of this rank would differ from its pruned base weights' zero
// pattern, summed over its SPP modules: zeros lost and zeros gained, both 0 by construction
// (checked at each evaluation and before an SPP model is saved).
struct ZeroChanges {
  int64_t lost = 0, gained = 0;
};
ZeroChanges spp_zero_changes(model::Llama& model);

// Replaces every SoRA module by the LoRA of its non-zero gates (rank removal); returns the total
// rank kept.
int64_t sora_to_lora(model::Llama& model);
// Whether a parameter name is a SoRA gate (trained by its own optimizer).
bool is_sora_gate(const std::string& name);

// The trainable parameters of a model as it stands (requires_grad), in registration order.
model::NamedTensors trainable_parameters(const model::Llama& model);

// Houlsby, Compacter and tiny-attention: adapters at the block hooks, not mergeable.
bool is_block_method(const std::string& method);

std::vector<model::Proj> parse_targets(const std::vector<std::string>& names);

}  // namespace spartan::adapters
