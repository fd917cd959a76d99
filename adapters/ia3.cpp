#include "adapters/ia3.h"

#include "common/error.h"

namespace spartan::adapters {

Ia3Linear::Ia3Linear(int64_t in_features, int64_t out_features, bool feedforward_)
    : feedforward(feedforward_) {
  ia3_l = register_parameter(
      "ia3_l", feedforward ? torch::ones({1, in_features}) : torch::ones({out_features, 1}));
}

torch::Tensor Ia3Linear::forward(const torch::Tensor& x, const torch::Tensor& weight) {
  auto l = ia3_l.view({-1});
  if (feedforward) return torch::linear((x * l).to(weight.scalar_type()), weight);
  auto base = torch::linear(x, weight);
  return (base * l).to(base.scalar_type());
}

namespace {
// Whether l lies along the split dimension: outputs for output scaling, inputs for input scaling.
bool along_split(const model::TpSlice& slice, bool feedforward) {
  return (slice.split == model::TpSplit::output && !feedforward) ||
         (slice.split == model::TpSplit::input && feedforward);
}
}  // namespace

void Ia3Linear::shard(const model::TpSlice& slice) {
  torch::NoGradGuard no_grad;
  slice_ = slice;
  if (slice.split == model::TpSplit::none) return;
  if (slice.holders > 1)
    throw UsageError("(IA)^3 on k or v with more TP ranks than KV heads", "[parallel] tp",
                     "use tp <= num_kv_heads");
  if (along_split(slice, feedforward))
    ia3_l.set_data(ia3_l.narrow(feedforward ? 1 : 0, slice.begin, slice.size()).clone());
}

model::TpPlacement Ia3Linear::placement(const std::string&) const {
  using P = model::TpPlacement;
  if (slice_.split == model::TpSplit::none) return {};
  if (along_split(slice_, feedforward)) return {P::sharded, feedforward ? 1 : 0};
  return {P::partial, 0};
}

const PeftRef* Ia3Method::peft_ref() const {
  static const PeftRef row{"none (a vector)",       "none",       "rescaling",
                           "hidden states",         "sequential", "rescaling",
                           "k, v, FFN intermediate"};
  return &row;
}

std::shared_ptr<model::LinearAdapter> Ia3Method::make_linear(const AdapterConfig&, model::Proj p,
                                                             int64_t out, int64_t in) const {
  // down_proj: rescale its input, the FFN intermediate
  return std::make_shared<Ia3Linear>(in, out, p == model::Proj::down);
}

ParameterCount Ia3Method::count(const model::LlamaArch& arch, const AdapterConfig& config) const {
  if (config.method == name()) return ProjectionMethod::count(arch, config);
  AdapterConfig peft_targets = config;
  peft_targets.targets = {"k", "v", "down"};
  return ProjectionMethod::count(arch, peft_targets);
}

torch::Tensor Ia3Linear::merged_weight(const torch::Tensor& weight) const {
  torch::NoGradGuard no_grad;
  return (weight.to(ia3_l.scalar_type()) * ia3_l).to(weight.scalar_type());
}

namespace {

class Ia3Costs : public model::MethodCosts {
 public:
  std::string name() const override { return "ia3"; }
  // It scales k's and v's outputs and down's input, and keeps those rather than the norms'.
  bool reads_norm_outputs() const override { return false; }
  model::ProjEntries entries(const model::ProjShape& p, double) const override {
    model::ProjEntries e;
    e.split = p.name == "down" ? p.in : p.out;  // l lies along the split dimension
    return e;
  }
  // k and v before scaling (down's input is the MLP's product, kept anyway).
  double kept(const model::ProjShape& p, double, const model::ProjActivations& a) const override {
    return p.name == "down" ? 0 : a.base_bytes * a.tokens * a.out_local;
  }
  model::MethodFlops flops(const model::StepSizes&) const override { return {}; }
};

}  // namespace

std::shared_ptr<const model::MethodCosts> Ia3Method::costs(const AdapterConfig&) const {
  return std::make_shared<Ia3Costs>();
}

}  // namespace spartan::adapters
