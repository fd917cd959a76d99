#include "adapters/adapter.h"

#include "adapters/block.h"
#include "adapters/ia3.h"
#include "adapters/lora.h"
#include "adapters/prefix.h"
#include "adapters/prompt.h"
#include "adapters/sora.h"
#include "adapters/spp.h"
#include "common/error.h"
#include "kernels/kernels.h"

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

namespace {
// The update a LoRA or SoRA module adds to its weight; undefined for other adapters.
torch::Tensor low_rank_delta(const model::LinearAdapter& adapter) {
  if (auto* sora = dynamic_cast<const SoraLinear*>(&adapter)) return sora->delta_weight();
  if (auto* lora = dynamic_cast<const LoraLinear*>(&adapter)) return lora->delta_weight();
  return {};
}
}  // namespace

torch::Tensor merged_weight(const model::LinearAdapter& adapter, const torch::Tensor& W,
                            const std::string& lora_merge) {
  torch::NoGradGuard no_grad;
  if (auto* spp = dynamic_cast<const SppLinear*>(&adapter)) return spp->merged_weight(W);
  if (auto* ia3 = dynamic_cast<const Ia3Linear*>(&adapter)) return ia3->merged_weight(W);
  if (auto delta = low_rank_delta(adapter); delta.defined()) {
    if (lora_merge == "masked") return kernels::masked_merge(W, delta);  // LoRA*
    return (W.to(torch::kFloat32) + delta).to(W.scalar_type());
  }
  throw Error("this adapter cannot be merged into the base", "merge",
              "export it as an adapter instead");
}

void merge_into_base(model::Llama& model, const std::string& lora_merge) {
  torch::NoGradGuard no_grad;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (model::Proj p : model::kAllProjections) {
      auto& proj = model->projection(l, p);
      if (!proj->adapter()) continue;
      proj->weight.copy_(merged_weight(*proj->adapter(), proj->weight, lora_merge));
      proj->detach();
    }
}

ZeroChanges spp_zero_changes(model::Llama& model) {
  torch::NoGradGuard no_grad;
  ZeroChanges z;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (model::Proj p : model::kAllProjections) {
      auto& proj = model->projection(l, p);
      const auto* spp = dynamic_cast<const SppLinear*>(proj->adapter().get());
      if (!spp) continue;
      const auto base = proj->weight.eq(0), merged = spp->merged_weight(proj->weight).eq(0);
      z.lost += (base & merged.logical_not()).sum().item<int64_t>();
      z.gained += (merged & base.logical_not()).sum().item<int64_t>();
    }
  return z;
}

std::shared_ptr<model::LinearAdapter> make_linear_adapter(const AdapterConfig& config,
                                                          model::Proj p, int64_t out, int64_t in) {
  if (config.method == "lora")
    return std::make_shared<LoraLinear>(in, out, config.r, config.alpha, config.dropout);
  if (config.method == "ia3")  // down_proj: rescale its input, the FFN intermediate
    return std::make_shared<Ia3Linear>(in, out, p == model::Proj::down);
  if (config.method == "sora")
    return std::make_shared<SoraLinear>(in, out, config.r, config.alpha, config.dropout);
  if (config.method == "spp")
    return std::make_shared<SppLinear>(in, out, config.r, config.alpha, config.dropout,
                                       config.spp.form, config.spp.recompute_weight);
  throw UsageError("adapter method '" + config.method + "' has no projection adapter",
                   "[adapter] method", "use lora, sora, spp or ia3");
}

int64_t sora_to_lora(model::Llama& model) {
  int64_t kept = 0;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (model::Proj p : model::kAllProjections) {
      auto& proj = model->projection(l, p);
      auto sora = std::dynamic_pointer_cast<SoraLinear>(proj->adapter());
      if (!sora) continue;
      kept += sora->nonzero_ranks();
      proj->attach(sora->to_lora());
    }
  return kept;
}

bool is_sora_gate(const std::string& name) {
  return name.size() > 13 && name.compare(name.size() - 13, 13, ".adapter.gate") == 0;
}

model::NamedTensors trainable_parameters(const model::Llama& model) {
  model::NamedTensors out;
  for (const auto& p : model->named_parameters())
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
  return out;
}

bool is_block_method(const std::string& method) {
  return method == "houlsby" || method == "compacter" || method == "tiny_attention";
}

namespace {
// Whether this rank holds every layer (no pipeline split): methods whose parameters feed every
// layer need it.
bool holds_every_layer(const model::Llama& model) {
  return model->first_layer() == 0 && model->end_layer() == model->num_layers();
}

// Houlsby and Compacter after attention and FFN, tiny-attention beside attention; built for
// every layer in the same order on every rank (same initial values on every layout).
void attach_blocks(model::Llama& model, const AdapterConfig& c) {
  const int64_t H = model->arch().hidden_size, m = c.bottleneck.size;
  std::shared_ptr<PhmRule> rule;
  if (c.method == "compacter") {
    const int64_t n = c.compacter.n;
    if (H % n != 0 || m % n != 0)
      throw UsageError("adapter.compacter.n = " + std::to_string(n) +
                           " does not divide the "
                           "hidden size " +
                           std::to_string(H) + " and the bottleneck " + std::to_string(m),
                       "[adapter.compacter] n", "choose n dividing both");
    if (!holds_every_layer(model))
      throw UsageError(
          "Compacter shares its A_i over every layer, so it cannot be split into "
          "pipeline stages",
          "[parallel] pp", "use pp = 1 with Compacter");
    rule = std::make_shared<PhmRule>(n);
  }
  for (int64_t l = 0; l < model->num_layers(); ++l) {
    std::shared_ptr<model::BlockAdapter> after_attention, after_mlp;
    if (c.method == "houlsby") {
      after_attention = std::make_shared<HoulsbyAdapter>(H, m);
      after_mlp = std::make_shared<HoulsbyAdapter>(H, m);
    } else if (c.method == "compacter") {
      after_attention =
          std::make_shared<CompacterAdapter>(H, m, c.compacter.n, c.compacter.rank, rule, l == 0);
      after_mlp =
          std::make_shared<CompacterAdapter>(H, m, c.compacter.n, c.compacter.rank, rule, false);
    } else {
      after_attention = std::make_shared<TinyAttentionAdapter>(H, c.tiny_attention.heads,
                                                               c.tiny_attention.head_dim);
    }
    if (l < model->first_layer() || l >= model->end_layer()) continue;
    model->layer(l)->attach_after_attention(after_attention);
    model->layer(l)->attach_after_mlp(after_mlp);
  }
}
}  // namespace

Attached attach(model::Llama& model, const AdapterConfig& config) {
  Attached a;
  a.method = config.method;
  if (config.method == "full") {
    // A KV head held by several TP ranks would get only part of its gradient on each.
    for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
      if (model->projection(l, model::Proj::k)->slice().holders > 1)
        throw UsageError("full training with more TP ranks than KV heads", "[parallel] tp",
                         "use tp <= num_kv_heads for method \"full\"");
    model->set_base_trainable(true);
  } else if (config.method == "prompt") {
    model->set_base_trainable(false);
    auto prompt = std::make_shared<PromptEmbedding>(config.prompt.num_virtual_tokens,
                                                    model->arch().hidden_size);
    if (model->has_embedding()) model->attach_embedding(prompt);
    model->set_prompt_length(config.prompt.num_virtual_tokens);
  } else if (config.method == "lora" || config.method == "spp" || config.method == "sora" ||
             config.method == "ia3") {
    model->set_base_trainable(false);
    // Every layer's adapter is built at full size in the same order on every rank, so every
    // layout draws the same initial values; a rank keeps its layers and its TP slices.
    for (int64_t l = 0; l < model->num_layers(); ++l)
      for (model::Proj p : parse_targets(config.targets)) {
        const auto [out, in] = model::projection_shape(model->arch(), p);
        auto adapter = make_linear_adapter(config, p, out, in);
        if (l < model->first_layer() || l >= model->end_layer()) continue;
        auto& proj = model->projection(l, p);
        adapter->shard(proj->slice());
        proj->attach(adapter);
      }
  } else if (config.method == "prefix") {
    model->set_base_trainable(false);
    const auto& arch = model->arch();
    if (!holds_every_layer(model))
      throw UsageError(
          "prefix tuning's encoder feeds every layer, so it cannot be split into "
          "pipeline stages",
          "[parallel] pp", "use pp = 1 with prefix tuning");
    if (model->projection(0, model::Proj::k)->slice().holders > 1)
      throw UsageError("prefix tuning with more TP ranks than KV heads", "[parallel] tp",
                       "use tp <= num_kv_heads for method \"prefix\"");
    const int64_t kv_dim = arch.num_kv_heads * arch.head_dim();
    const auto& p = config.prefix;
    model->attach_kv(std::make_shared<PrefixEncoder>(
        p.num_virtual_tokens, kv_dim, arch.num_layers,
        p.encoder_hidden_size > 0 ? p.encoder_hidden_size : kv_dim, p.projection));
  } else if (is_block_method(config.method)) {
    model->set_base_trainable(false);
    attach_blocks(model, config);
  } else {
    throw UsageError("adapter method '" + config.method + "' is not available in this build",
                     "[adapter] method",
                     "use lora, sora, spp, ia3, houlsby, compacter, tiny_attention, prompt, "
                     "prefix or full");
  }
  a.trainable = trainable_parameters(model);
  return a;
}

}  // namespace spartan::adapters
