#include "adapters/method.h"

#include "adapters/adapter.h"
#include "common/error.h"

namespace spartan::adapters {

std::shared_ptr<model::LinearAdapter> Method::make_linear(const AdapterConfig& config, model::Proj,
                                                          int64_t, int64_t) const {
  throw UsageError("adapter method '" + config.method + "' has no projection adapter",
                   "[adapter] method", "use lora, sora, spp or ia3");
}

bool holds_every_layer(const model::Llama& model) {
  return model->first_layer() == 0 && model->end_layer() == model->num_layers();
}

std::vector<model::Proj> ProjectionMethod::targets(const AdapterConfig& config) const {
  return parse_targets(config.targets);
}

void ProjectionMethod::attach(model::Llama& model, const AdapterConfig& config) const {
  model->set_base_trainable(false);
  for (int64_t l = 0; l < model->num_layers(); ++l)
    for (model::Proj p : targets(config)) {
      const auto [out, in] = model::projection_shape(model->arch(), p);
      auto adapter = make_linear(config, p, out, in);
      if (l < model->first_layer() || l >= model->end_layer()) continue;
      auto& proj = model->projection(l, p);
      adapter->shard(proj->slice());
      proj->attach(adapter);
    }
}

ParameterCount ProjectionMethod::count(const model::LlamaArch& arch,
                                       const AdapterConfig& config) const {
  torch::NoGradGuard no_grad;
  ParameterCount n;
  const auto on = targets(config);
  for (model::Proj p : on) {
    const auto [out, in] = model::projection_shape(arch, p);
    for (const auto& t : make_linear(config, p, out, in)->parameters()) n.per_layer += t.numel();
    n.formula_value += formula(p, out, in, config);
  }
  n.formula_value *= arch.num_layers;
  n.formula = formula_text();
  n.insertions = arch.num_layers * static_cast<int64_t>(on.size());
  return n;
}

}  // namespace spartan::adapters
