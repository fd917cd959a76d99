// The end of a `spartan train` run: its result saved in the run folder in the form its method
// names (adapters::Export): the trained model (run/model), the base with the adapter merged
// (run/merged), or the adapter in PEFT's layout (run/adapter), for LoRA* also the re-masked merge.
//
// Nothing whole on one rank: a run of several ranks exports on rank 0 from its final checkpoint
// and the base folder, streamed tensor by tensor as `spartan merge` does (methods at the
// projections and full training), or from its trained tensors alone (prompt, prefix and block
// adapters, which are small and need no base weight).
#pragma once

#include <string>

#include "adapters/method.h"
#include "common/config.h"
#include "model/llama.h"

namespace spartan::checkpoints {

struct Exported {
  std::string saved;  // the folders written ("<run>/adapter and <run>/merged")
  std::string note;   // a line for the user, or empty ("SoRA kept 12 of 56 ranks; ...")
};

// One process, from the trained model in memory; `tokenizer` is copied into a model folder. A
// masked merge (LoRA*) leaves `model` merged with the base's zeros imposed again.
Exported export_model(const Config& c, model::Llama& model, const std::string& tokenizer,
                      const std::string& run_dir);

// Whether a run of several ranks exports from its final checkpoint (else: from its trained
// tensors gathered on rank 0).
bool exports_from_checkpoint(const adapters::Method& method);
// Rank 0 of a run of several ranks: from the run's final checkpoint (its trained tensors) and
// the base model folder.
Exported export_from_checkpoint(const Config& c, const std::string& run_dir);
// Rank 0 of a run of several ranks: from the trained tensors of every rank, named as in the
// model (trainer::gather_to_root).
Exported export_trained(const Config& c, const model::NamedTensors& trained,
                        const std::string& run_dir);

}  // namespace spartan::checkpoints
