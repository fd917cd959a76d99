// Adapters in Hugging Face PEFT's folder layout: adapter_config.json + adapter_model.safetensors,
// loadable by PeftModel.from_pretrained. Today: LoRA.
#pragma once

#include <string>

#include "adapters/prefix.h"
#include "common/config.h"
#include "model/llama.h"

namespace spartan::checkpoints {

// One projection's adapter, for export without a model around it (the offline merge).
struct PeftModule {
  int64_t layer;
  model::Proj proj;
  std::shared_ptr<model::LinearAdapter> adapter;
};
// LoRA modules (SoRA converted with to_lora() first) and (IA)^3 modules in PEFT's layout.
void write_peft_lora(const std::string& folder, const std::vector<PeftModule>& modules,
                     const AdapterConfig& config, const std::string& base_model_path);
void write_peft_ia3(const std::string& folder, const std::vector<PeftModule>& modules,
                    const std::string& base_model_path);

// Writes the model's attached LoRA modules (every projection that has one must be LoRA).
// Modules of another rank or alpha than `config` (SoRA after rank removal) go into PEFT's
// rank_pattern and alpha_pattern.
void save_peft_lora(const std::string& folder, model::Llama& model, const AdapterConfig& config,
                    const std::string& base_model_path);

// Reads a PEFT LoRA folder, attaches LoRA modules with its weights to the model, and returns the
// adapter settings it found (method, targets, r, alpha, dropout). rank_pattern and
// alpha_pattern are honoured; other PEFT options (rsLoRA, DoRA, fan_in_fan_out, biases, layer
// subsets, modules_to_save) are errors.
AdapterConfig load_peft_lora(const std::string& folder, model::Llama& model);

// (IA)^3 in PEFT's layout (peft_type IA3; down_proj listed as a feed-forward module).
void save_peft_ia3(const std::string& folder, model::Llama& model,
                   const std::string& base_model_path);
AdapterConfig load_peft_ia3(const std::string& folder, model::Llama& model);

// Prompt tuning in PEFT's layout (peft_type PROMPT_TUNING, prompt_embeddings (P, H)).
void save_peft_prompt(const std::string& folder, model::Llama& model,
                      const std::string& base_model_path);
AdapterConfig load_peft_prompt(const std::string& folder, model::Llama& model);
// The same from the trained (P, H) tensor alone (a distributed run's end: no model around it).
void write_peft_prompt(const std::string& folder, const torch::Tensor& prompt_embeddings,
                       const model::LlamaArch& arch, const std::string& base_model_path);

// Prefix tuning in PEFT's layout (peft_type PREFIX_TUNING, inference form: prompt_embeddings
// (P, L·2·E) is the reparameterisation MLP's output; token_dim E = n_kv_heads·head_dim and
// num_attention_heads = n_kv_heads, which LLaMA's grouped-query attention needs).
void save_peft_prefix(const std::string& folder, model::Llama& model,
                      const std::string& base_model_path);
AdapterConfig load_peft_prefix(const std::string& folder, model::Llama& model);
void write_peft_prefix(const std::string& folder, adapters::PrefixEncoder& encoder,
                       const model::LlamaArch& arch, const std::string& base_model_path);

// Houlsby, Compacter and tiny-attention, which PEFT does not have, in the same folder layout:
// adapter_config.json (peft_type "SPARTAN_BLOCK", the method and its sizes) and every trained
// tensor under its Spartan name in adapter_model.safetensors. Spartan reads it back (eval).
void save_block_adapter(const std::string& folder, model::Llama& model, const AdapterConfig& config,
                        const std::string& base_model_path);
AdapterConfig load_block_adapter(const std::string& folder, model::Llama& model);
// The same from the trained tensors under their names in the model.
void write_block_adapter(const std::string& folder, const model::NamedTensors& trained,
                         const AdapterConfig& config, const std::string& base_model_path);

// Reads adapter_config.json's peft_type and loads a LoRA, (IA)^3, prompt-tuning or Spartan
// block-adapter folder.
AdapterConfig load_peft_adapter(const std::string& folder, model::Llama& model);

}  // namespace spartan::checkpoints
