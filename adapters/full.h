// "full": no adapter; every base weight trains (the demo pretrains its tiny base this way). The
// result is the trained model itself, saved as a Hugging Face folder. With adapter.merge =
// "masked" the base's zeros in the targeted projections are kept through training (BaseZeros):
// the ceiling a sparsity-preserving adapter can be compared with.
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
  // Masked: the targeted projections, whose zero pattern the checkpoints record and re-check.
  std::vector<model::Proj> targets(const AdapterConfig& config) const override;
  bool keeps_base_zeros(const AdapterConfig& config) const override {
    return config.merge == MergeForm::masked;
  }
  std::shared_ptr<const model::MethodCosts> costs(const AdapterConfig& config) const override;
};

// The base's zeros in the targeted projections of this rank's layers and TP slices, taken when
// made and kept through training: the gradients at the zeros are cleared after the gradient
// sync (so clipping and AdamW's moments see none) and the zeros are written again after each
// optimizer step (so a zero stays a zero bit for bit, whatever the optimizer does).
class BaseZeros {
 public:
  BaseZeros() = default;
  BaseZeros(model::Llama& model, const std::vector<model::Proj>& targets);
  void clear_gradients();
  void impose();

 private:
  std::vector<std::pair<torch::Tensor, torch::Tensor>> kept_;  // a weight, where it is non-zero
};

}  // namespace spartan::adapters
