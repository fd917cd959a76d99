#include "checkpoints/peft.h"

#include <sys/stat.h>

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "adapters/adapter.h"
#include "adapters/lora.h"
#include "common/error.h"
#include "model/weights.h"

namespace spartan::checkpoints {
namespace {

constexpr const char* kPrefix = "base_model.model.";

std::string module_name(int64_t layer, model::Proj p) {
  const bool attn = p == model::Proj::q || p == model::Proj::k || p == model::Proj::v ||
                    p == model::Proj::o;
  return "model.layers." + std::to_string(layer) + (attn ? ".self_attn." : ".mlp.") +
         model::proj_name(p) + "_proj";
}

}  // namespace

void save_peft_lora(const std::string& folder, model::Llama& m, const AdapterConfig& config,
                    const std::string& base_model_path) {
  ::mkdir(folder.c_str(), 0755);
  model::NamedTensors tensors;
  std::set<std::string> targets;
  for (int64_t l = 0; l < m->num_layers(); ++l)
    for (model::Proj p : model::kAllProjections) {
      auto adapter = m->projection(l, p)->adapter();
      if (!adapter) continue;
      auto lora = std::dynamic_pointer_cast<adapters::LoraLinear>(adapter);
      if (!lora)
        throw Error("projection " + module_name(l, p) + " has a non-LoRA adapter", folder,
                    "PEFT export of this method is not available");
      const std::string base = kPrefix + module_name(l, p);
      tensors.emplace_back(base + ".lora_A.weight", lora->lora_A.detach());
      tensors.emplace_back(base + ".lora_B.weight", lora->lora_B.detach());
      targets.insert(std::string(model::proj_name(p)) + "_proj");
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
  j["rank_pattern"] = nlohmann::json::object();
  j["alpha_pattern"] = nlohmann::json::object();
  std::ofstream out(folder + "/adapter_config.json");
  out << j.dump(2) << "\n";
  if (!out)
    throw Error("cannot write adapter_config.json", folder, "check that the folder is writable");
}

AdapterConfig load_peft_lora(const std::string& folder, model::Llama& m) {
  const std::string path = folder + "/adapter_config.json";
  std::ifstream in(path);
  if (!in) throw Error("cannot read adapter_config.json", path, "pass a PEFT adapter folder");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("not valid JSON (") + e.what() + ")", path, "re-export the adapter");
  }
  auto unsupported = [&](const std::string& what) {
    throw Error("unsupported PEFT option: " + what, path, "export a plain LoRA adapter");
  };
  if (j.value("peft_type", "") != "LORA") unsupported("peft_type " + j.value("peft_type", "?"));
  if (j.value("use_rslora", false)) unsupported("use_rslora");
  if (j.value("use_dora", false)) unsupported("use_dora");
  if (j.value("fan_in_fan_out", false)) unsupported("fan_in_fan_out");
  if (j.value("bias", "none") != "none") unsupported("bias");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (j.contains(key) && !j[key].is_null() && !j[key].empty()) unsupported(key);
  for (const char* key : {"layers_to_transform", "modules_to_save"})
    if (j.contains(key) && !j[key].is_null()) unsupported(key);
  if (!j.contains("target_modules") || !j["target_modules"].is_array())
    unsupported("target_modules that is not a list");

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
  adapters::attach(m, cfg);

  model::SafetensorsFile file(folder + "/adapter_model.safetensors");
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < m->num_layers(); ++l)
    for (model::Proj p : adapters::parse_targets(cfg.targets)) {
      auto lora = std::dynamic_pointer_cast<adapters::LoraLinear>(m->projection(l, p)->adapter());
      const std::string base = kPrefix + module_name(l, p);
      for (auto [suffix, param] : {std::pair{".lora_A.weight", lora->lora_A},
                                   std::pair{".lora_B.weight", lora->lora_B}}) {
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
    }
  for (const auto& t : file.tensors())
    if (!used.count(t.name))
      throw Error("unexpected tensor '" + t.name + "'", file.path(),
                  "check that the adapter matches adapter_config.json");
  return cfg;
}

}  // namespace spartan::checkpoints
