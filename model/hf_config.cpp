#include "model/hf_config.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "common/config.h"
#include "common/error.h"

namespace spartan::model {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad_config(const std::string& path, const std::string& what,
                             const std::string& todo = "fix or regenerate config.json") {
  throw Error(what, path, todo);
}

template <class T>
T get(const json& j, const char* key, const T& fallback, const std::string& path, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) bad_config(path, std::string("missing key '") + key + "'");
    return fallback;
  }
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // nlohmann would truncate 32.5 to 32: a size that is not a whole number is an error.
    if (it->is_number_float() && it->get<double>() != std::floor(it->get<double>()))
      bad_config(path, std::string("key '") + key + "' must be a whole number, got " + it->dump());
  }
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    bad_config(path, std::string("key '") + key + "' has the wrong type (" + it->type_name() + ")");
  }
}

}  // namespace

int64_t LlamaArch::num_parameters() const {
  const int64_t h = hidden_size, kv = num_kv_heads * head_dim();
  const int64_t attn = h * h /*q*/ + 2 * h * kv /*k,v*/ + h * h /*o*/;
  const int64_t mlp = 3 * h * intermediate_size;
  const int64_t layer = attn + mlp + 2 * h /*norms*/;
  const int64_t embed = vocab_size * h;
  return embed + num_layers * layer + h /*final norm*/ + (tie_word_embeddings ? 0 : embed);
}

LlamaArch read_hf_config(const std::string& folder) {
  const std::string path = folder + "/config.json";
  std::ifstream in(path);
  if (!in)
    throw Error("cannot read config.json", path,
                "pass a Hugging Face model folder (config.json + *.safetensors)");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    bad_config(path, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) bad_config(path, "not a JSON object");

  const std::string type = get<std::string>(j, "model_type", "llama", path, false);
  if (type != "llama")
    bad_config(path, "model_type '" + type + "' is not supported",
               "use a LLaMA-family model (model_type \"llama\")");
  if (get<bool>(j, "attention_bias", false, path, false) ||
      get<bool>(j, "mlp_bias", false, path, false))
    bad_config(path, "attention or MLP biases are not supported",
               "use a LLaMA model without biases");
  const std::string act = get<std::string>(j, "hidden_act", "silu", path, false);
  if (act != "silu")
    bad_config(path, "hidden_act '" + act + "' is not supported", "LLaMA uses silu");

  LlamaArch a;
  a.vocab_size = get<int64_t>(j, "vocab_size", 0, path, true);
  a.hidden_size = get<int64_t>(j, "hidden_size", 0, path, true);
  a.intermediate_size = get<int64_t>(j, "intermediate_size", 0, path, true);
  a.num_layers = get<int64_t>(j, "num_hidden_layers", 0, path, true);
  a.num_heads = get<int64_t>(j, "num_attention_heads", 0, path, true);
  a.num_kv_heads = get<int64_t>(j, "num_key_value_heads", a.num_heads, path, false);
  a.max_position_embeddings = get<int64_t>(j, "max_position_embeddings", 2048, path, false);
  a.rms_norm_eps = get<double>(j, "rms_norm_eps", 1e-6, path, false);
  a.rope_theta = get<double>(j, "rope_theta", 10000.0, path, false);
  a.initializer_range = get<double>(j, "initializer_range", 0.02, path, false);
  a.tie_word_embeddings = get<bool>(j, "tie_word_embeddings", false, path, false);
  a.bos_token_id = get<int64_t>(j, "bos_token_id", 1, path, false);
  a.eos_token_id = get<int64_t>(j, "eos_token_id", 2, path, false);
  a.torch_dtype = get<std::string>(j, "torch_dtype", "float32", path, false);

  // Rotary settings: transformers 5 writes them as "rope_parameters" {rope_theta, rope_type,
  // factor}; 4.x as "rope_theta" and "rope_scaling" {type (or rope_type), factor}.
  auto rope = j.find("rope_parameters");
  const bool v5 = rope != j.end() && rope->is_object();
  if (v5) a.rope_theta = get<double>(*rope, "rope_theta", a.rope_theta, path, false);
  auto rs = v5 ? rope : j.find("rope_scaling");
  if (rs != j.end() && !rs->is_null()) {
    std::string kind = get<std::string>(*rs, "rope_type", "", path, false);
    if (kind.empty()) kind = get<std::string>(*rs, "type", v5 ? "default" : "", path, false);
    if (kind == "linear")
      a.rope_scaling_factor = get<double>(*rs, "factor", 1.0, path, true);
    else if (!(v5 && kind == "default"))
      bad_config(path, "rope scaling type '" + kind + "' is not supported",
                 "use a model without rope scaling or with linear scaling");
  }
  if (j.contains("dtype") && !j.contains("torch_dtype"))  // transformers 5's name
    a.torch_dtype = get<std::string>(j, "dtype", "float32", path, false);

  for (auto [key, value] : {std::pair{"vocab_size", a.vocab_size},
                            {"hidden_size", a.hidden_size},
                            {"intermediate_size", a.intermediate_size},
                            {"num_hidden_layers", a.num_layers},
                            {"num_attention_heads", a.num_heads},
                            {"num_key_value_heads", a.num_kv_heads},
                            {"max_position_embeddings", a.max_position_embeddings}})
    if (value <= 0) bad_config(path, std::string("key '") + key + "' must be positive");
  if (a.hidden_size % a.num_heads != 0 || a.head_dim() % 2 != 0)
    bad_config(path, "hidden_size " + std::to_string(a.hidden_size) + " does not split into " +
                         std::to_string(a.num_heads) + " heads of even size");
  if (const auto hd = get<int64_t>(j, "head_dim", a.head_dim(), path, false); hd != a.head_dim())
    bad_config(path,
               "head_dim " + std::to_string(hd) + " differs from hidden_size / " +
                   "num_attention_heads = " + std::to_string(a.head_dim()),
               "use a LLaMA model whose heads split the hidden size");
  if (a.num_heads % a.num_kv_heads != 0)
    bad_config(path, "num_attention_heads is not a multiple of num_key_value_heads");
  if (a.rms_norm_eps <= 0 || a.rope_theta <= 0 || a.rope_scaling_factor <= 0)
    bad_config(path, "rms_norm_eps, rope_theta and the rope scaling factor must be positive");
  check_arch_size(a, path);
  return a;
}

void check_arch_size(const LlamaArch& a, const std::string& where) {
  constexpr double kMaxParameters = 1e13;
  const double h = double(a.hidden_size), kv = double(a.num_kv_heads) * double(a.head_dim());
  const double layer = 2 * h * h + 2 * h * kv + 3 * h * double(a.intermediate_size) + 2 * h;
  const double n =
      double(a.vocab_size) * h * (a.tie_word_embeddings ? 1 : 2) + double(a.num_layers) * layer + h;
  if (n > kMaxParameters) {
    char count[32];
    std::snprintf(count, sizeof count, "%.3g", n);
    throw Error(std::string("the model's sizes give ") + count +
                    " parameters, beyond any model Spartan can hold (10^13)",
                where, "check vocab_size, hidden_size, intermediate_size and the layer count");
  }
}

void check_tokenizer_fits(const LlamaArch& arch, int64_t tokenizer_pieces,
                          const std::string& tokenizer_path) {
  if (tokenizer_pieces > arch.vocab_size)
    throw UsageError("the tokenizer has " + std::to_string(tokenizer_pieces) +
                         " pieces, the model's vocabulary only " + std::to_string(arch.vocab_size),
                     tokenizer_path, "use the tokenizer the model was trained with");
}

void write_hf_config(const std::string& folder, const LlamaArch& a) {
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = a.vocab_size;
  j["hidden_size"] = a.hidden_size;
  j["intermediate_size"] = a.intermediate_size;
  j["num_hidden_layers"] = a.num_layers;
  j["num_attention_heads"] = a.num_heads;
  j["num_key_value_heads"] = a.num_kv_heads;
  j["max_position_embeddings"] = a.max_position_embeddings;
  j["rms_norm_eps"] = a.rms_norm_eps;
  j["rope_theta"] = a.rope_theta;
  if (a.rope_scaling_factor != 1.0)
    j["rope_scaling"] = {{"type", "linear"}, {"factor", a.rope_scaling_factor}};
  else
    j["rope_scaling"] = nullptr;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["initializer_range"] = a.initializer_range;
  j["tie_word_embeddings"] = a.tie_word_embeddings;
  j["bos_token_id"] = a.bos_token_id;
  j["eos_token_id"] = a.eos_token_id;
  j["torch_dtype"] = a.torch_dtype;
  const std::string path = folder + "/config.json";
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw Error("cannot write config.json", path, "check that the folder is writable");
}

LlamaArch arch_from_init(const ModelInitConfig& init) {
  LlamaArch a;
  a.vocab_size = init.vocab_size;
  a.hidden_size = init.hidden_size;
  a.intermediate_size = init.intermediate_size;
  a.num_layers = init.num_layers;
  a.num_heads = init.num_heads;
  a.num_kv_heads = init.num_kv_heads;
  a.max_position_embeddings = init.max_position_embeddings;
  a.rms_norm_eps = init.rms_norm_eps;
  a.rope_theta = init.rope_theta;
  a.initializer_range = init.initializer_range;
  a.tie_word_embeddings = init.tie_word_embeddings;
  check_arch_size(a, "[model.init]");
  return a;
}

}  // namespace spartan::model
