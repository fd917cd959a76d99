#include "adapters/full.h"

#include "adapters/adapter.h"
#include "common/error.h"

namespace spartan::adapters {

void FullMethod::attach(model::Llama& model, const AdapterConfig&) const {
  if (model->arch().tie_word_embeddings && !holds_every_layer(model))
    throw UsageError(
        "full fine-tuning of a model with a tied LM head cannot split it into "
        "pipeline stages (the embedding and the head would train apart)",
        "[parallel] pp", "set parallel.pp = 1 or use an adapter method");
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    if (model->projection(l, model::Proj::k)->slice().holders > 1)
      throw UsageError("full training with more TP ranks than KV heads", "[parallel] tp",
                       "use tp <= num_kv_heads for method \"full\"");
  model->set_base_trainable(true);
}

ParameterCount FullMethod::count(const model::LlamaArch& arch, const AdapterConfig&) const {
  ParameterCount n;
  n.shared = n.formula_value = arch.num_parameters();
  n.formula = "every base parameter";
  n.insertions = 0;
  return n;
}

std::vector<model::Proj> FullMethod::targets(const AdapterConfig& config) const {
  return keeps_base_zeros(config) ? parse_targets(config.targets) : std::vector<model::Proj>{};
}

namespace {

class FullCosts : public model::MethodCosts {
 public:
  explicit FullCosts(bool keeps_zeros) : keeps_zeros_(keeps_zeros) {}
  std::string name() const override { return keeps_zeros_ ? "full*" : "full"; }
  bool trains_everything() const override { return true; }
  model::ProjEntries entries(const model::ProjShape& p, double) const override {
    model::ProjEntries e;
    e.split = p.out * p.in;
    return e;
  }
  // Where each targeted weight is non-zero, a byte an entry (BaseZeros).
  double bytes_per_targeted_entry() const override { return keeps_zeros_ ? 1 : 0; }
  // Every product's weight gradient.
  model::MethodFlops flops(const model::StepSizes& step) const override {
    model::MethodFlops f;
    f.weight_grad = 2 * step.tokens * step.products;
    return f;
  }

 private:
  bool keeps_zeros_;
};

}  // namespace

std::shared_ptr<const model::MethodCosts> FullMethod::costs(const AdapterConfig& config) const {
  return std::make_shared<FullCosts>(keeps_base_zeros(config));
}

BaseZeros::BaseZeros(model::Llama& model, const std::vector<model::Proj>& targets) {
  torch::NoGradGuard no_grad;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (model::Proj p : targets) {
      const torch::Tensor& w = model->projection(l, p)->weight;
      kept_.emplace_back(w, w.ne(0));
    }
}

void BaseZeros::clear_gradients() {
  torch::NoGradGuard no_grad;
  for (auto& [w, nonzero] : kept_)
    if (w.grad().defined()) w.mutable_grad().mul_(nonzero);
}

void BaseZeros::impose() {
  torch::NoGradGuard no_grad;
  for (auto& [w, nonzero] : kept_) w.mul_(nonzero);
}

}  // namespace spartan::adapters
