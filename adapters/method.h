// Every adapter method behind one interface, registered by name in one place (registry.cpp).
//
// A method says what it is (its PEFT-Ref properties, where it acts, how its result is saved),
// builds its modules on a model (attach: which layouts it supports is its own check), counts its
// trainable parameters, splits them into parameter groups and folds into the base where it can.
// Nothing outside adapters/ compares method names or casts adapters to find out what they can
// do: it asks the method (and a projection's LinearAdapter, model/hooks.h).
//
// Adding a method: one file pair with its module(s) and its Method class, one line in
// registry.cpp, and its name in the configuration's list of methods (common/config.cpp, below
// adapters/ in the dependency order); docs/architecture.md shows a worked example.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"
#include "model/hf_config.h"
#include "model/llama.h"
#include "model/plan.h"

namespace spartan::adapters {

// A method's row of PEFT-Ref's typology (Sabry & Belz 2023, Table 1; SoRA and SPP added).
struct PeftRef {
  const char* intra;        // intra-connectivity of the module
  const char* inter;        // inter-connectivity: modules that share parameters
  const char* adaptation;   // how the base's computation is changed
  const char* input;        // what the module reads
  const char* insertion;    // sequential (after) or parallel (beside) the workspace
  const char* integration;  // how its output is combined
  const char* workspace;
};

// Trainable parameters at a model's sizes: counted from modules built at those sizes, and the
// closed-form formula evaluated beside them (`spartan adapters` prints both).
struct ParameterCount {
  int64_t per_layer = 0, shared = 0;  // counted from live modules
  int64_t formula_value = 0;          // the formula, evaluated
  std::string formula;
  int64_t insertions = 0;  // modules in the model
};

// Where a method's trained tensors live.
enum class Site {
  base,         // the base's own weights (full training)
  projections,  // a LinearAdapter at each targeted projection
  blocks,       // BlockAdapters after attention and the FFN
  embedding,    // an EmbeddingAdapter at the input embeddings
  keys_values,  // a KvAdapter in front of every layer's keys and values
};

// What `spartan train` saves at the end of a run (the writers are in checkpoints/).
enum class Export {
  model_folder,   // the trained model as a Hugging Face folder (run/model)
  merged_model,   // folded into the base, saved as a model folder (run/merged)
  peft_lora,      // PEFT's LoRA layout (run/adapter)
  peft_ia3,       // PEFT's (IA)^3 layout
  peft_prompt,    // PEFT's prompt-tuning layout
  peft_prefix,    // PEFT's prefix-tuning layout (inference form)
  spartan_block,  // PEFT's folder layout with Spartan's own type (SPARTAN_BLOCK)
};

// Trainable parameters by optimizer: `main` takes AdamW; `gates` take SoRA's gate optimizer
// (AdamW and the proximal step) and are made bit-identical over TP and DP before it.
struct ParameterGroups {
  model::NamedTensors main, gates;
};

class Method {
 public:
  virtual ~Method() = default;
  virtual const char* name() const = 0;
  // How messages name it ("SoRA", "(IA)^3").
  virtual const char* title() const = 0;
  // Its PEFT-Ref row; nullptr for a method that is not parameter-efficient (full).
  virtual const PeftRef* peft_ref() const { return nullptr; }
  virtual Site site() const = 0;
  virtual Export exports() const = 0;

  // Builds the method's modules on `model` (fresh values from the current torch seed, the same on
  // every layout) and freezes or unfreezes the base; a layout the method cannot train on (the
  // model's shard says which) is a UsageError.
  virtual void attach(model::Llama& model, const AdapterConfig& config) const = 0;
  // Trainable parameters at the sizes of `arch`.
  virtual ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const = 0;

  // A fresh adapter for projection p of shape (out, in), at full size (projection methods).
  virtual std::shared_ptr<model::LinearAdapter> make_linear(const AdapterConfig& config,
                                                            model::Proj p, int64_t out,
                                                            int64_t in) const;
  // The projections the method adapts (empty unless its site is `projections`).
  virtual std::vector<model::Proj> targets(const AdapterConfig& config) const { return {}; }
  // Whether the memory estimate sizes the adapter by config.r on each target.
  virtual bool sized_by_rank() const { return false; }

  // Whether merging keeps exactly the base's zeros (SPP): checked at each evaluation and before
  // a merged model is saved.
  virtual bool keeps_zero_pattern() const { return false; }
  // Whether the trained adapter folds into the base weights (`spartan merge`).
  virtual bool mergeable() const { return false; }
  // LoRA*: the merged weights with the base's zeros imposed again, saved beside the adapter.
  virtual bool masked_merge(const AdapterConfig& config) const { return false; }
  // Whether training itself keeps the base's zeros in the targeted projections (full training
  // with adapter.merge = "masked"): the trainer clears their gradients and re-imposes them.
  virtual bool keeps_base_zeros(const AdapterConfig& config) const { return false; }
  // The name runs are listed under ("lora*" for LoRA's masked merge, "full*" for masked training).
  std::string display_name(const AdapterConfig& config) const {
    return std::string(name()) + (masked_merge(config) || keeps_base_zeros(config) ? "*" : "");
  }

  // Its memory and FLOPs as `spartan plan` counts them (model/plan.h); nullptr for a method the
  // plan does not model.
  virtual std::shared_ptr<const model::MethodCosts> costs(const AdapterConfig& config) const {
    return nullptr;
  }

  // The trainable parameters (in registration order) by optimizer.
  virtual ParameterGroups groups(const model::NamedTensors& trainable) const {
    return {trainable, {}};
  }
  // Settings beyond [adapter]'s common ones that a checkpoint must agree on to be resumed.
  virtual std::vector<std::pair<std::string, std::string>> identity(
      const AdapterConfig& config) const {
    return {};
  }
};

// The method registered as `name`; an unknown name is a UsageError naming the known ones.
const Method& method(const std::string& name);
// The method registered as `name`, or nullptr.
const Method* find_method(const std::string& name);
// Every registered method, in the order of PEFT-Ref's table (full last).
const std::vector<const Method*>& methods();

// Shared by the methods at a linear projection (LoRA, SoRA, SPP, (IA)^3): every layer's adapter
// is built at full size in the same order on every rank, so every layout draws the same initial
// values; a rank keeps its layers and its TP slices.
class ProjectionMethod : public Method {
 public:
  Site site() const override { return Site::projections; }
  void attach(model::Llama& model, const AdapterConfig& config) const override;
  ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const override;
  std::vector<model::Proj> targets(const AdapterConfig& config) const override;

 protected:
  // The closed form of one target's trainable entries, and its text.
  virtual int64_t formula(model::Proj p, int64_t out, int64_t in,
                          const AdapterConfig& config) const = 0;
  virtual const char* formula_text() const = 0;
};

// Whether this rank holds every layer (no pipeline split): methods whose parameters feed every
// layer need it.
bool holds_every_layer(const model::Llama& model);

}  // namespace spartan::adapters
