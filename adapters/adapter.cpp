#include "adapters/adapter.h"

#include "adapters/method.h"
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

torch::Tensor merged_weight(const model::LinearAdapter& adapter, const torch::Tensor& W,
                            MergeForm lora_merge) {
  return adapter.merged_weight(W, lora_merge == MergeForm::masked);
}

void merge_into_base(model::Llama& model, MergeForm lora_merge) {
  torch::NoGradGuard no_grad;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (model::Proj p : model::kAllProjections) {
      auto& proj = model->projection(l, p);
      if (!proj->adapter()) continue;
      proj->weight.copy_(merged_weight(*proj->adapter(), proj->weight, lora_merge));
      proj->detach();
    }
}

ZeroChanges zero_pattern_changes(model::Llama& model) {
  torch::NoGradGuard no_grad;
  ZeroChanges z;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (model::Proj p : model::kAllProjections) {
      auto& proj = model->projection(l, p);
      const auto& adapter = proj->adapter();
      if (!adapter || !adapter->keeps_zero_pattern()) continue;
      const auto base = proj->weight.eq(0);
      const auto merged = adapter->merged_weight(proj->weight, false).eq(0);
      z.lost += (base & merged.logical_not()).sum().item<int64_t>();
      z.gained += (merged & base.logical_not()).sum().item<int64_t>();
    }
  return z;
}

std::shared_ptr<model::LinearAdapter> make_linear_adapter(const AdapterConfig& config,
                                                          model::Proj p, int64_t out, int64_t in) {
  return method(config.method).make_linear(config, p, out, in);
}

Ranks compact_adapters(model::Llama& model) {
  Ranks ranks;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (model::Proj p : model::kAllProjections) {
      auto& proj = model->projection(l, p);
      if (!proj->adapter() || proj->adapter()->ranks_kept() < 0) continue;
      ranks.kept += proj->adapter()->ranks_kept();
      ranks.total += proj->adapter()->ranks();
      proj->attach(proj->adapter()->compacted());
    }
  return ranks;
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
  method(config.method).attach(model, config);
  a.trainable = trainable_parameters(model);
  return a;
}

}  // namespace spartan::adapters
