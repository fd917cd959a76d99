// "full": no adapter; every base weight trains (the demo pretrains its tiny base this way). The
// result is the trained model itself, saved as a Hugging Face folder.
#pragma once

#include "adapters/method.h"

namespace spartan::adapters {

class FullMethod : public Method {
 public:
  const char* name() const override { return "full"; }
  const char* title() const override { return "full training"; }
  Site site() const override { return Site::base; }
  Export exports() const override { return Export::model_folder; }
  // The model folder comes from the checkpoint alone (`spartan merge` writes it).
  bool mergeable() const override { return true; }
  // Needs at most one TP rank per KV head (a shared head would get part of its gradient on each)
  // and, for a tied LM head, every layer on each rank (the embedding and the head train as one).
  void attach(model::Llama& model, const AdapterConfig& config) const override;
  ParameterCount count(const model::LlamaArch& arch, const AdapterConfig& config) const override;
};

}  // namespace spartan::adapters
