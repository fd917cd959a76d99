#include "checkpoints/peft.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "adapters/adapter.h"
#include "adapters/ia3.h"
#include "adapters/lora.h"
#include "adapters/method.h"
#include "adapters/prefix.h"
#include "adapters/prompt.h"
#include "common/error.h"
#include "common/files.h"
#include "model/weights.h"

namespace spartan::checkpoints {
namespace {

// Modules by layer, then projection: the files are the same bytes whatever order they came in.
std::vector<PeftModule> in_model_order(std::vector<PeftModule> modules) {
  std::stable_sort(modules.begin(), modules.end(), [](const PeftModule& a, const PeftModule& b) {
    return a.layer != b.layer ? a.layer < b.layer
                              : static_cast<int>(a.proj) < static_cast<int>(b.proj);
  });
  return modules;
}

constexpr const char* kPrefix = "base_model.model.";

nlohmann::json read_adapter_config(const std::string& folder) {
  const std::string path = folder + "/adapter_config.json";
  std::ifstream in(path);
  if (!in) throw Error("cannot read adapter_config.json", path, "pass a PEFT adapter folder");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("not valid JSON (") + e.what() + ")", path, "re-export the adapter");
  }
}

void write_adapter_config(const std::string& folder, const nlohmann::ordered_json& j) {
  std::ofstream out(folder + "/adapter_config.json");
  out << j.dump(2) << "\n";
  if (!out)
    throw Error("cannot write adapter_config.json", folder, "check that the folder is writable");
}

}  // namespace

std::vector<PeftModule> attached_modules(model::Llama& m) {
  std::vector<PeftModule> out;
  for (int64_t l = m->first_layer(); l < m->end_layer(); ++l)
    for (model::Proj p : model::kAllProjections)
      if (auto adapter = m->projection(l, p)->adapter()) out.push_back({l, p, adapter});
  return out;
}

void save_peft_lora(const std::string& folder, model::Llama& m, const AdapterConfig& config,
                    const std::string& base_model_path) {
  write_peft_lora(folder, attached_modules(m), config, base_model_path);
}

void save_peft_ia3(const std::string& folder, model::Llama& m, const std::string& base_model_path) {
  write_peft_ia3(folder, attached_modules(m), base_model_path);
}

void write_peft_lora(const std::string& folder, const std::vector<PeftModule>& unordered,
                     const AdapterConfig& config, const std::string& base_model_path) {
  const auto modules = in_model_order(unordered);
  make_dirs(folder);
  model::NamedTensors tensors;
  std::set<std::string> targets;
  // Modules whose rank or alpha differ from the config's (SoRA after rank removal) are listed
  // in PEFT's rank_pattern / alpha_pattern under their full module names.
  nlohmann::ordered_json rank_pattern = nlohmann::ordered_json::object();
  nlohmann::ordered_json alpha_pattern = nlohmann::ordered_json::object();
  for (const auto& [l, p, adapter] : modules) {
    auto lora = std::dynamic_pointer_cast<adapters::LoraLinear>(adapter);
    if (!lora)
      throw Error("projection " + model::projection_name(l, p) + " has a non-LoRA adapter", folder,
                  "PEFT export of this method is not available");
    const std::string base = kPrefix + model::projection_name(l, p);
    tensors.emplace_back(base + ".lora_A.weight", lora->lora_A.detach());
    tensors.emplace_back(base + ".lora_B.weight", lora->lora_B.detach());
    targets.insert(std::string(model::proj_name(p)) + "_proj");
    const int64_t r = lora->lora_A.size(0);
    const double alpha = lora->scale * r;
    if (r != config.r) rank_pattern[model::projection_name(l, p)] = r;
    if (std::abs(alpha - config.alpha) > 1e-9 * std::abs(config.alpha))
      alpha_pattern[model::projection_name(l, p)] = alpha;
  }
  if (tensors.empty())
    throw Error("the model has no LoRA modules to export", folder, "attach LoRA first");
  model::save_safetensors(folder + "/adapter_model.safetensors", tensors, {{"format", "pt"}});

  nlohmann::ordered_json j;
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] = base_model_path;
  j["r"] = config.r;
  j["lora_alpha"] = config.alpha;
  j["lora_dropout"] = config.dropout;
  j["target_modules"] = std::vector<std::string>(targets.begin(), targets.end());
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["use_rslora"] = false;
  j["use_dora"] = false;
  j["modules_to_save"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["rank_pattern"] = rank_pattern;
  j["alpha_pattern"] = alpha_pattern;
  write_adapter_config(folder, j);
}

AdapterConfig load_peft_lora(const std::string& folder, model::Llama& m) {
  const std::string path = folder + "/adapter_config.json";
  const nlohmann::json j = read_adapter_config(folder);
  auto unsupported = [&](const std::string& what) {
    throw Error("unsupported PEFT option: " + what, path, "export a plain LoRA adapter");
  };
  if (j.value("peft_type", "") != "LORA") unsupported("peft_type " + j.value("peft_type", "?"));
  if (j.value("use_rslora", false)) unsupported("use_rslora");
  if (j.value("use_dora", false)) unsupported("use_dora");
  if (j.value("fan_in_fan_out", false)) unsupported("fan_in_fan_out");
  if (j.value("bias", "none") != "none") unsupported("bias");
  for (const char* key : {"layers_to_transform", "modules_to_save"})
    if (j.contains(key) && !j[key].is_null()) unsupported(key);
  if (!j.contains("target_modules") || !j["target_modules"].is_array())
    unsupported("target_modules that is not a list");
  // rank_pattern / alpha_pattern: PEFT matches a key against a module name that equals it or
  // ends in "." + key.
  auto pattern_value = [&](const char* key, const std::string& module, double fallback) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    for (auto it = j[key].begin(); it != j[key].end(); ++it) {
      const std::string& k = it.key();
      const bool match =
          module == k ||
          (module.size() > k.size() && module.compare(module.size() - k.size(), k.size(), k) == 0 &&
           module[module.size() - k.size() - 1] == '.');
      if (match) return it.value().get<double>();
    }
    return fallback;
  };

  AdapterConfig cfg;
  cfg.method = "lora";
  cfg.r = j.value("r", int64_t{8});
  cfg.alpha = j.value("lora_alpha", 8.0);
  cfg.dropout = j.value("lora_dropout", 0.0);
  cfg.targets.clear();
  for (const auto& t : j["target_modules"]) {
    std::string name = t.get<std::string>();
    if (name.size() < 6 || name.substr(name.size() - 5) != "_proj")
      unsupported("target module '" + name + "'");
    cfg.targets.push_back(name.substr(0, name.size() - 5));
  }
  m->set_base_trainable(false);

  model::SafetensorsFile file(folder + "/adapter_model.safetensors");
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  // Built at full size and cut to this rank's TP slices, as adapters::attach does; a pipeline
  // stage keeps its own layers (the other stages' tensors are theirs, not unexpected).
  for (int64_t l = 0; l < m->num_layers(); ++l)
    for (model::Proj p : adapters::parse_targets(cfg.targets)) {
      const std::string module = model::projection_name(l, p);
      const std::string base = kPrefix + module;
      if (l < m->first_layer() || l >= m->end_layer()) {
        used.insert(base + ".lora_A.weight");
        used.insert(base + ".lora_B.weight");
        continue;
      }
      auto& proj = m->projection(l, p);
      const auto r = static_cast<int64_t>(pattern_value("rank_pattern", module, cfg.r));
      const double alpha = pattern_value("alpha_pattern", module, cfg.alpha);
      auto lora = std::make_shared<adapters::LoraLinear>(proj->in_features(), proj->out_features(),
                                                         r, alpha, cfg.dropout);
      for (auto [suffix, param] :
           {std::pair{".lora_A.weight", lora->lora_A}, std::pair{".lora_B.weight", lora->lora_B}}) {
        const std::string name = base + suffix;
        if (!file.find(name))
          throw Error("tensor '" + name + "' is missing", file.path(),
                      "check that the adapter matches adapter_config.json and the base model");
        auto t = model::read_tensor(file, name, torch::kFloat32);
        if (t.sizes() != param.sizes())
          throw Error("tensor '" + name + "' has the wrong shape for this base model", file.path(),
                      "use the adapter with the base model it was trained on");
        param.copy_(t);
        used.insert(name);
      }
      lora->shard(proj->slice());
      proj->attach(lora);
    }
  for (const auto& t : file.tensors())
    if (!used.count(t.name))
      throw Error("unexpected tensor '" + t.name + "'", file.path(),
                  "check that the adapter matches adapter_config.json");
  return cfg;
}

void write_peft_ia3(const std::string& folder, const std::vector<PeftModule>& unordered,
                    const std::string& base_model_path) {
  const auto modules = in_model_order(unordered);
  make_dirs(folder);
  model::NamedTensors tensors;
  std::set<std::string> targets, feedforward;
  for (const auto& [l, p, adapter] : modules) {
    auto ia3 = std::dynamic_pointer_cast<adapters::Ia3Linear>(adapter);
    if (!ia3) continue;
    tensors.emplace_back(kPrefix + model::projection_name(l, p) + ".ia3_l", ia3->ia3_l.detach());
    const std::string name = std::string(model::proj_name(p)) + "_proj";
    targets.insert(name);
    if (ia3->feedforward) feedforward.insert(name);
  }
  if (tensors.empty())
    throw Error("the model has no (IA)^3 modules to export", folder, "attach (IA)^3 first");
  model::save_safetensors(folder + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::ordered_json j;
  j["peft_type"] = "IA3";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] = base_model_path;
  j["target_modules"] = std::vector<std::string>(targets.begin(), targets.end());
  j["feedforward_modules"] = std::vector<std::string>(feedforward.begin(), feedforward.end());
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_ia3_weights"] = true;
  j["modules_to_save"] = nullptr;
  write_adapter_config(folder, j);
}

AdapterConfig load_peft_ia3(const std::string& folder, model::Llama& m) {
  const nlohmann::json j = read_adapter_config(folder);
  const std::string path = folder + "/adapter_config.json";
  auto names = [&](const char* key) {
    std::set<std::string> out;
    if (!j.contains(key) || !j[key].is_array())
      throw Error(std::string("'") + key + "' is not a list", path,
                  "export a plain (IA)^3 adapter");
    for (const auto& t : j[key]) out.insert(t.get<std::string>());
    return out;
  };
  const auto targets = names("target_modules"), feedforward = names("feedforward_modules");
  if (j.value("fan_in_fan_out", false) ||
      (j.contains("modules_to_save") && !j["modules_to_save"].is_null()))
    throw Error("unsupported PEFT option (fan_in_fan_out or modules_to_save)", path,
                "export a plain (IA)^3 adapter");
  AdapterConfig cfg;
  cfg.method = "ia3";
  cfg.targets.clear();
  m->set_base_trainable(false);
  model::SafetensorsFile file(folder + "/adapter_model.safetensors");
  torch::NoGradGuard no_grad;
  for (model::Proj p : model::kAllProjections) {
    const std::string proj = std::string(model::proj_name(p)) + "_proj";
    if (!targets.count(proj)) continue;
    if (feedforward.count(proj) != (p == model::Proj::down))
      throw Error("feed-forward module set {" + proj + "} differs from Spartan's (down_proj)", path,
                  "export with feedforward_modules = [\"down_proj\"]");
    cfg.targets.push_back(model::proj_name(p));
    for (int64_t l = m->first_layer(); l < m->end_layer(); ++l) {  // this stage's layers
      auto& projection = m->projection(l, p);
      auto ia3 = std::make_shared<adapters::Ia3Linear>(
          projection->in_features(), projection->out_features(), p == model::Proj::down);
      const std::string name = kPrefix + model::projection_name(l, p) + ".ia3_l";
      if (!file.find(name))
        throw Error("tensor '" + name + "' is missing", file.path(),
                    "check that the adapter matches adapter_config.json");
      auto t = model::read_tensor(file, name, torch::kFloat32);
      if (t.sizes() != ia3->ia3_l.sizes())
        throw Error("tensor '" + name + "' has the wrong shape for this base model", file.path(),
                    "use the adapter with the base model it was trained on");
      ia3->ia3_l.copy_(t);
      ia3->shard(projection->slice());  // full size in the file, this rank's TP slice kept
      projection->attach(ia3);
    }
  }
  return cfg;
}

void save_peft_prompt(const std::string& folder, model::Llama& m,
                      const std::string& base_model_path) {
  auto prompt = std::dynamic_pointer_cast<adapters::PromptEmbedding>(m->embedding_adapter());
  if (!prompt)
    throw Error("the model has no prompt-tuning embeddings to export", folder,
                "attach prompt tuning first");
  write_peft_prompt(folder, prompt->prompt_embeddings, m->arch(), base_model_path);
}

void write_peft_prompt(const std::string& folder, const torch::Tensor& prompt_embeddings,
                       const model::LlamaArch& a, const std::string& base_model_path) {
  make_dirs(folder);
  model::save_safetensors(folder + "/adapter_model.safetensors",
                          {{"prompt_embeddings", prompt_embeddings.detach()}}, {{"format", "pt"}});
  nlohmann::ordered_json j;
  j["peft_type"] = "PROMPT_TUNING";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] = base_model_path;
  j["num_virtual_tokens"] = prompt_embeddings.size(0);
  j["token_dim"] = a.hidden_size;
  j["num_transformer_submodules"] = 1;
  j["num_attention_heads"] = a.num_heads;
  j["num_layers"] = a.num_layers;
  j["prompt_tuning_init"] = "RANDOM";
  j["prompt_tuning_init_text"] = nullptr;
  j["tokenizer_name_or_path"] = nullptr;
  j["inference_mode"] = true;
  write_adapter_config(folder, j);
}

AdapterConfig load_peft_prompt(const std::string& folder, model::Llama& m) {
  const nlohmann::json j = read_adapter_config(folder);
  const std::string path = folder + "/adapter_config.json";
  if (j.value("num_transformer_submodules", 1) != 1 ||
      j.value("token_dim", m->arch().hidden_size) != m->arch().hidden_size)
    throw Error("prompt embeddings do not fit this model (token_dim or submodules)", path,
                "use the adapter with the base model it was trained on");
  model::SafetensorsFile file(folder + "/adapter_model.safetensors");
  auto t = model::read_tensor(file, "prompt_embeddings", torch::kFloat32);
  if (t.dim() != 2 || t.size(1) != m->arch().hidden_size)
    throw Error("prompt_embeddings has the wrong shape for this base model", file.path(),
                "use the adapter with the base model it was trained on");
  auto prompt = std::make_shared<adapters::PromptEmbedding>(t.size(0), t.size(1));
  {
    torch::NoGradGuard no_grad;
    prompt->prompt_embeddings.copy_(t);
  }
  m->set_base_trainable(false);
  m->attach_embedding(prompt);
  AdapterConfig cfg;
  cfg.method = "prompt";
  cfg.prompt.num_virtual_tokens = t.size(0);
  return cfg;
}

void save_peft_prefix(const std::string& folder, model::Llama& m,
                      const std::string& base_model_path) {
  auto prefix = std::dynamic_pointer_cast<adapters::PrefixEncoder>(m->kv_adapter());
  if (!prefix)
    throw Error("the model has no prefix encoder to export", folder, "attach prefix tuning first");
  write_peft_prefix(folder, *prefix, m->arch(), base_model_path);
}

void write_peft_prefix(const std::string& folder, adapters::PrefixEncoder& encoder,
                       const model::LlamaArch& a, const std::string& base_model_path) {
  adapters::PrefixEncoder* prefix = &encoder;
  make_dirs(folder);
  torch::NoGradGuard no_grad;
  model::save_safetensors(folder + "/adapter_model.safetensors",
                          {{"prompt_embeddings", encoder.past_key_values().contiguous()}},
                          {{"format", "pt"}});
  nlohmann::ordered_json j;
  j["peft_type"] = "PREFIX_TUNING";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] = base_model_path;
  j["num_virtual_tokens"] = prefix->num_virtual_tokens();
  j["token_dim"] = prefix->kv_dim;
  j["num_attention_heads"] = a.num_kv_heads;
  j["num_layers"] = a.num_layers;
  j["num_transformer_submodules"] = 1;
  j["encoder_hidden_size"] =
      prefix->transform ? prefix->transform->ptr<torch::nn::LinearImpl>(0)->options.out_features()
                        : prefix->kv_dim;
  j["prefix_projection"] = static_cast<bool>(prefix->transform);
  j["inference_mode"] = true;
  write_adapter_config(folder, j);
}

AdapterConfig load_peft_prefix(const std::string& folder, model::Llama& m) {
  const nlohmann::json j = read_adapter_config(folder);
  const std::string path = folder + "/adapter_config.json";
  const auto& a = m->arch();
  const int64_t kv_dim = a.num_kv_heads * a.head_dim();
  if (j.value("num_transformer_submodules", 1) != 1 || j.value("num_layers", 0) != a.num_layers ||
      j.value("token_dim", 0) != kv_dim || j.value("num_attention_heads", 0) != a.num_kv_heads)
    throw Error(
        "prefix does not fit this model (num_layers, token_dim = n_kv_heads x head_dim "
        "and num_attention_heads = n_kv_heads expected)",
        path, "use the adapter with the base model it was trained on");
  model::SafetensorsFile file(folder + "/adapter_model.safetensors");
  auto t = model::read_tensor(file, "prompt_embeddings", torch::kFloat32);
  if (t.dim() != 2 || t.size(1) != a.num_layers * 2 * kv_dim)
    throw Error("prompt_embeddings has the wrong shape for this base model", file.path(),
                "use the adapter with the base model it was trained on");
  auto prefix =
      std::make_shared<adapters::PrefixEncoder>(t.size(0), kv_dim, a.num_layers, 0, false);
  {
    torch::NoGradGuard no_grad;
    prefix->embedding->weight.copy_(t);
  }
  m->set_base_trainable(false);
  m->attach_kv(prefix);
  AdapterConfig cfg;
  cfg.method = "prefix";
  cfg.prefix.num_virtual_tokens = t.size(0);
  cfg.prefix.projection = false;
  return cfg;
}

void save_block_adapter(const std::string& folder, model::Llama& m, const AdapterConfig& config,
                        const std::string& base_model_path) {
  write_block_adapter(folder, adapters::trainable_parameters(m), config, base_model_path);
}

void write_block_adapter(const std::string& folder, const model::NamedTensors& trained,
                         const AdapterConfig& config, const std::string& base_model_path) {
  make_dirs(folder);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, t] : trained) tensors.emplace_back(name, t.detach());
  model::save_safetensors(folder + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::ordered_json j;
  j["peft_type"] = "SPARTAN_BLOCK";
  j["method"] = config.method;
  j["base_model_name_or_path"] = base_model_path;
  j["bottleneck"] = config.bottleneck.size;
  j["compacter_n"] = config.compacter.n;
  j["compacter_rank"] = config.compacter.rank;
  j["tiny_attention_heads"] = config.tiny_attention.heads;
  j["tiny_attention_head_dim"] = config.tiny_attention.head_dim;
  write_adapter_config(folder, j);
}

AdapterConfig load_block_adapter(const std::string& folder, model::Llama& m) {
  const nlohmann::json j = read_adapter_config(folder);
  AdapterConfig cfg;
  cfg.method = j.value("method", "");
  const adapters::Method* method = adapters::find_method(cfg.method);
  if (!method || method->site() != adapters::Site::blocks)
    throw Error("unknown block adapter method '" + cfg.method + "'",
                folder + "/adapter_config.json", "re-export the adapter with spartan train");
  cfg.bottleneck.size = j.value("bottleneck", cfg.bottleneck.size);
  cfg.compacter.n = j.value("compacter_n", cfg.compacter.n);
  cfg.compacter.rank = j.value("compacter_rank", cfg.compacter.rank);
  cfg.tiny_attention.heads = j.value("tiny_attention_heads", cfg.tiny_attention.heads);
  cfg.tiny_attention.head_dim = j.value("tiny_attention_head_dim", cfg.tiny_attention.head_dim);
  adapters::attach(m, cfg);
  model::SafetensorsFile file(folder + "/adapter_model.safetensors");
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : adapters::trainable_parameters(m)) {
    auto saved = model::read_tensor(file, name, torch::kFloat32);
    if (!saved.sizes().equals(t.sizes()))
      throw Error("tensor " + name + " has the wrong shape for this base model", file.path(),
                  "use the adapter with the base model it was trained on");
    t.copy_(saved);
  }
  return cfg;
}

AdapterConfig load_peft_adapter(const std::string& folder, model::Llama& m) {
  const std::string type = read_adapter_config(folder).value("peft_type", "");
  if (type == "SPARTAN_BLOCK") return load_block_adapter(folder, m);
  if (type == "PREFIX_TUNING") return load_peft_prefix(folder, m);
  if (type == "IA3") return load_peft_ia3(folder, m);
  if (type == "PROMPT_TUNING") return load_peft_prompt(folder, m);
  return load_peft_lora(folder, m);  // LORA, or a clear error naming the type
}

}  // namespace spartan::checkpoints
