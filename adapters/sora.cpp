#include "adapters/sora.h"

#include <cmath>

namespace spartan::adapters {

SoraLinear::SoraLinear(int64_t in_features, int64_t out_features, int64_t r, double alpha,
                       double dropout_p)
    : scale(alpha / static_cast<double>(r)), dropout(dropout_p) {
  lora_A = register_parameter("lora_A", torch::empty({r, in_features}));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, r}));
  gate = register_parameter("gate", torch::randn({r}));
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(lora_A, std::sqrt(5.0));
}

torch::Tensor SoraLinear::forward(const torch::Tensor& x, const torch::Tensor& weight) {
  auto base = torch::linear(x, weight);
  auto h = x.to(lora_A.scalar_type());
  if (dropout > 0) h = torch::dropout(h, dropout, is_training());
  auto delta = torch::linear(torch::linear(h, lora_A) * gate, lora_B) * scale;
  return (base + delta).to(base.scalar_type());
}

void SoraLinear::shard(const model::TpSlice& slice) {
  slice_ = slice;
  shard_low_rank(slice, lora_A, lora_B);
}

model::TpPlacement SoraLinear::placement(const std::string& param) const {
  return low_rank_placement(slice_, param);
}

int64_t SoraLinear::nonzero_ranks() const { return gate.ne(0).sum().item<int64_t>(); }

torch::Tensor SoraLinear::delta_weight() const {
  return torch::matmul(lora_B * gate, lora_A) * scale;
}

torch::Tensor SoraLinear::merged_weight(const torch::Tensor& W, bool re_mask) const {
  torch::NoGradGuard no_grad;
  return merge_low_rank(W, delta_weight(), re_mask);
}

std::shared_ptr<LoraLinear> SoraLinear::to_lora() const {
  torch::NoGradGuard no_grad;
  auto kept = gate.ne(0).nonzero().squeeze(1);
  const int64_t r = std::max<int64_t>(1, kept.numel());
  auto lora = std::make_shared<LoraLinear>(lora_A.size(1), lora_B.size(0), r, scale * r, dropout);
  if (kept.numel() == 0) {  // every rank switched off: a LoRA that adds nothing
    lora->lora_B.zero_();
    return lora;
  }
  lora->lora_A.copy_(lora_A.index_select(0, kept));
  lora->lora_B.copy_(lora_B.index_select(1, kept) * gate.index_select(0, kept));
  return lora;
}

bool is_sora_gate(const std::string& name) {
  return name.size() > 13 && name.compare(name.size() - 13, 13, ".adapter.gate") == 0;
}

const PeftRef* SoraMethod::peft_ref() const {
  static const PeftRef row{"dense, low rank, gated", "none",     "reparametrisation",
                           "hidden states",          "parallel", "scaled addition",
                           "linear projections"};
  return &row;
}

std::shared_ptr<model::LinearAdapter> SoraMethod::make_linear(const AdapterConfig& c, model::Proj,
                                                              int64_t out, int64_t in) const {
  return std::make_shared<SoraLinear>(in, out, c.r, c.alpha, c.dropout);
}

std::shared_ptr<const model::MethodCosts> SoraMethod::costs(const AdapterConfig&) const {
  return low_rank_costs(name(), true);
}

ParameterGroups SoraMethod::groups(const model::NamedTensors& trainable) const {
  ParameterGroups g;
  for (const auto& np : trainable) (is_sora_gate(np.first) ? g.gates : g.main).push_back(np);
  return g;
}

}  // namespace spartan::adapters
