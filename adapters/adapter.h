// Attaching the configured method to a model, and what it trains; the helpers every method
// shares. The methods themselves are in adapters/method.h and registry.cpp: "lora", "sora",
// "spp", "ia3" (linear projections), "houlsby", "compacter", "tiny_attention" (after blocks),
// "prompt" (input embeddings), "prefix" (every layer's keys and values) and "full" (every base
// weight trainable, no adapter: the demo pretrains its tiny base this way).
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
                            MergeForm lora_merge);

// Folds every attached adapter into its projection's weight and detaches it: SPP as W̃ + s·W̃'
// (zeros stay zeros), (IA)^3 as W ⊙ l (zeros stay zeros), LoRA and SoRA as W + Δ, or with
// lora_merge masked re-masked with the base's zero pattern (the SPP paper's LoRA*).
void merge_into_base(model::Llama& model, MergeForm lora_merge);

// How the merged weights of this rank would differ from its base weights' zero pattern, summed
// over the adapters that keep it (SPP): zeros lost and zeros gained, both 0 by construction
// (checked at each evaluation and before such a model is saved).
struct ZeroChanges {
  int64_t lost = 0, gained = 0;
};
ZeroChanges zero_pattern_changes(model::Llama& model);

// Replaces every adapter that can drop parameters by its compacted form (SoRA: the LoRA of its
// non-zero gates); returns the ranks kept and the ranks they had, summed (0 of 0 where no
// adapter has ranks to drop).
struct Ranks {
  int64_t kept = 0, total = 0;
};
Ranks compact_adapters(model::Llama& model);

// The trainable parameters of a model as it stands (requires_grad), in registration order.
model::NamedTensors trainable_parameters(const model::Llama& model);

std::vector<model::Proj> parse_targets(const std::vector<std::string>& names);

}  // namespace spartan::adapters
