// The architecture of a Hugging Face LLaMA model folder (config.json). No torch here.
#pragma once

#include <cstdint>
#include <string>

namespace spartan {
struct ModelInitConfig;
}

namespace spartan::model {

struct LlamaArch {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_layers = 32;
  int64_t num_heads = 32;
  int64_t num_kv_heads = 32;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double rope_scaling_factor = 1.0;  // "linear" rope scaling: positions are divided by it
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  std::string torch_dtype = "float32";

  int64_t head_dim() const { return hidden_size / num_heads; }
  // Parameters of LlamaForCausalLM with this shape (the tied head counted once).
  int64_t num_parameters() const;
};

// Reads <folder>/config.json. Rejects what the model does not implement (attention or MLP
// biases, rope scaling other than linear, a model_type other than llama) with a clear error.
LlamaArch read_hf_config(const std::string& folder);

// Refuses shapes beyond any model Spartan can hold (more than 10^13 parameters), before a count
// overflows or an allocation is tried; `where` names the source (config.json, [model.init]).
void check_arch_size(const LlamaArch& arch, const std::string& where);

// Refuses a tokenizer with more pieces than the model has embedding rows (its ids would index
// past the embedding), naming both sizes.
void check_tokenizer_fits(const LlamaArch& arch, int64_t tokenizer_pieces,
                          const std::string& tokenizer_path);
void write_hf_config(const std::string& folder, const LlamaArch& arch);

LlamaArch arch_from_init(const ModelInitConfig& init);

}  // namespace spartan::model
