#include "adapters/adapter.h"

#include "adapters/lora.h"
#include "common/error.h"

namespace spartan::adapters {

int64_t Attached::num_trainable() const {
  int64_t n = 0;
  for (const auto& [name, t] : trainable) n += t.numel();
  return n;
}

std::vector<model::Proj> parse_targets(const std::vector<std::string>& names) {
  std::vector<model::Proj> out;
  for (const auto& n : names) {
    model::Proj p;
    if (!model::parse_proj(n, &p))
      throw UsageError("unknown projection '" + n + "'", "[adapter] targets",
                       "use q, k, v, o, gate, up, down");
    out.push_back(p);
  }
  return out;
}

model::NamedTensors trainable_parameters(const model::Llama& model) {
  model::NamedTensors out;
  for (const auto& p : model->named_parameters())
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
  return out;
}

Attached attach(model::Llama& model, const AdapterConfig& config) {
  Attached a;
  a.method = config.method;
  if (config.method == "full") {
    model->set_base_trainable(true);
  } else if (config.method == "lora") {
    model->set_base_trainable(false);
    for (int64_t l = 0; l < model->num_layers(); ++l)
      for (model::Proj p : parse_targets(config.targets)) {
        auto& proj = model->projection(l, p);
        const auto& w = proj->weight;
        proj->attach(std::make_shared<LoraLinear>(w.size(1), w.size(0), config.r, config.alpha,
                                                  config.dropout));
      }
  } else {
    throw UsageError("adapter method '" + config.method + "' is not available in this build",
                     "[adapter] method", "use lora or full");
  }
  a.trainable = trainable_parameters(model);
  return a;
}

}  // namespace spartan::adapters
