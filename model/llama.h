// The LLaMA decoder as Hugging Face's LlamaForCausalLM computes it (transformers 4.40, eager
// attention): RMSNorm in fp32, rotary embeddings with rotate_half, grouped-query attention with
// a causal mask and an fp32 softmax, SwiGLU MLP, untied or tied LM head. Parameter names are
// HF's ("model.layers.0.self_attn.q_proj.weight"), so loading and saving are name-for-name.
//
// Base parameters live in fp32 or bf16 and are frozen unless set_base_trainable(true) (full
// fine-tuning). Adapters attach at the hook points of model/hooks.h.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/hf_config.h"
#include "model/hooks.h"
#include "model/weights.h"

namespace spartan::model {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, torch::Dtype dtype);
  torch::Tensor forward(const torch::Tensor& x);  // (..., dim)
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// A frozen linear projection without bias, with a LinearAdapter hook.
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in_features, int64_t out_features, torch::Dtype dtype);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, in) -> (B, T, out)
  void attach(std::shared_ptr<LinearAdapter> adapter);
  void detach();
  const std::shared_ptr<LinearAdapter>& adapter() const { return adapter_; }
  torch::Tensor weight;  // (out, in)

 private:
  std::shared_ptr<LinearAdapter> adapter_;
};
TORCH_MODULE(Projection);

// cos and sin tables of the rotary embedding for positions [offset, offset + T).
struct Rotary {
  torch::Tensor cos, sin;  // (T, head_dim), in the compute dtype
};
Rotary rotary_tables(const LlamaArch& arch, int64_t seq_len, torch::Dtype dtype,
                     const torch::Device& device, int64_t offset = 0);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const LlamaArch& arch, torch::Dtype dtype);
  torch::Tensor forward(const torch::Tensor& x, const Rotary& rope);  // (B, T, H) -> (B, T, H)
  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t num_heads, num_kv_heads, head_dim;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const LlamaArch& arch, torch::Dtype dtype);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const LlamaArch& arch, torch::Dtype dtype);
  torch::Tensor forward(const torch::Tensor& x, const Rotary& rope);
  Projection& projection(Proj p);
  // Block hooks (Houlsby, Compacter, tiny-attention); nullptr detaches.
  void attach_after_attention(std::shared_ptr<BlockAdapter> adapter);
  void attach_after_mlp(std::shared_ptr<BlockAdapter> adapter);

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};

 private:
  std::shared_ptr<BlockAdapter> after_attention_, after_mlp_;
};
TORCH_MODULE(DecoderLayer);

class LlamaImpl : public torch::nn::Module {
 public:
  LlamaImpl(const LlamaArch& arch, torch::Dtype dtype);

  // (B, T) int64 token ids -> (B, T, V) fp32 logits.
  torch::Tensor forward(const torch::Tensor& input_ids);

  const LlamaArch& arch() const { return arch_; }
  torch::Dtype dtype() const { return dtype_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  DecoderLayer& layer(int64_t i) { return layers_.at(i); }
  Projection& projection(int64_t layer, Proj p) { return layers_.at(layer)->projection(p); }
  torch::Tensor& embed_weight() { return embed_; }
  torch::Tensor& lm_head_weight();  // the embedding when tied
  void attach_embedding(std::shared_ptr<EmbeddingAdapter> adapter);
  const std::shared_ptr<EmbeddingAdapter>& embedding_adapter() const { return embedding_adapter_; }

  // The base model's parameters under their Hugging Face names (tied head not repeated).
  NamedTensors base_parameters() const;
  void set_base_trainable(bool trainable);
  // As HF's _init_weights: linears and embeddings ~ N(0, initializer_range), norms = 1.
  void init_weights();
  // Copies every base tensor from a folder; names, shapes and completeness are checked.
  void load(const WeightStore& store);
  // config.json + safetensors (sharded past max_shard_bytes).
  void save(const std::string& folder, uint64_t max_shard_bytes = 5ull << 30) const;

 private:
  LlamaArch arch_;
  torch::Dtype dtype_;
  torch::Tensor embed_;  // (V, H), "model.embed_tokens.weight"
  std::vector<DecoderLayer> layers_;
  RMSNorm norm_{nullptr};
  torch::Tensor lm_head_;  // undefined when tied
  std::vector<std::string> base_names_;
  std::shared_ptr<EmbeddingAdapter> embedding_adapter_;
};
TORCH_MODULE(Llama);

// Loads a model folder: architecture from config.json, weights from safetensors.
Llama load_llama(const std::string& folder, torch::Dtype dtype);

// Next-token cross-entropy per position: logits (B, T, V), labels (B, T) with -100 = ignored.
// Returns (B, T-1) losses, 0 where the label is ignored.
torch::Tensor token_losses(const torch::Tensor& logits, const torch::Tensor& labels);
// Mean over the positions that are not ignored (HF's loss).
torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace spartan::model
