// SoRA (Ding et al. 2023): a LoRA whose rank is found by training, at a linear projection.
//   z = s · W_u · diag(g) · W_d · dropout(x),   W_d ∈ R^{r×in}, W_u ∈ R^{out×r}, g ∈ R^r
//   s = alpha / r (r is r_max)
// As the official code (TsinghuaC3I/SoRA, src/lora.py): W_d Kaiming-uniform (a = √5), W_u zeros
// (so training starts exactly at the base), g ~ N(0, 1). The gates are trained by their own
// optimizer with a proximal step (trainer/sora_gates.h) that drives entries to exact zeros;
// a zero gate switches its rank off, and to_lora() removes it.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "adapters/lora.h"
#include "model/hooks.h"

namespace spartan::adapters {

class SoraLinear : public model::LinearAdapter {
 public:
  SoraLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha, double dropout);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight) override;

  int64_t nonzero_ranks() const;
  // The same function as a LoRA of rank = the non-zero gates: A' = W_d[kept],
  // B' = W_u[:, kept]·diag(g[kept]), alpha' = s·r' so the scale stays s.
  std::shared_ptr<LoraLinear> to_lora() const;
  torch::Tensor delta_weight() const;  // s·W_u·diag(g)·W_d
  torch::Tensor merged_weight(const torch::Tensor& W, bool re_mask) const override;  // as LoRA
  std::shared_ptr<model::LinearAdapter> compacted() const override { return to_lora(); }
  int64_t ranks_kept() const override { return nonzero_ranks(); }
  int64_t ranks() const override { return gate.numel(); }

  // As LoRA (lora.h); the gate is replicated and its gradient summed over TP.
  void shard(const model::TpSlice& slice) override;
  model::TpPlacement placement(const std::string& param) const override;

  torch::Tensor lora_A;  // W_d (r, in)
  torch::Tensor lora_B;  // W_u (out, r)
  torch::Tensor gate;    // g (r)
  double scale, dropout;

 private:
  model::TpSlice slice_;
};

// Whether a parameter name is a SoRA gate (trained by its own optimizer).
bool is_sora_gate(const std::string& name);

// "sora": trained as LoRA with gates of their own optimizer (the proximal step); saved as the
// LoRA of its non-zero gates.
class SoraMethod : public LoraMethod {
 public:
  const char* name() const override { return "sora"; }
  const char* title() const override { return "SoRA"; }
  const PeftRef* peft_ref() const override;
  std::shared_ptr<model::LinearAdapter> make_linear(const AdapterConfig& config, model::Proj p,
                                                    int64_t out, int64_t in) const override;
  ParameterGroups groups(const model::NamedTensors& trainable) const override;
  std::shared_ptr<const model::MethodCosts> costs(const AdapterConfig& config) const override;
  std::vector<std::pair<std::string, std::string>> identity(
      const AdapterConfig& config) const override {
    return {{"sora gate adam", name_of(config.sora.adam)}};
  }

 protected:
  int64_t formula(model::Proj, int64_t out, int64_t in, const AdapterConfig& c) const override {
    return c.r * (in + out) + c.r;
  }
  const char* formula_text() const override { return "L·Σ_targets (r(d_in + d_out) + r)"; }
};

}  // namespace spartan::adapters
