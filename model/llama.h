// The LLaMA decoder as Hugging Face's LlamaForCausalLM computes it (transformers 4.40, eager
// attention): RMSNorm in fp32, rotary embeddings with rotate_half, grouped-query attention with
// a causal mask and an fp32 softmax, SwiGLU MLP, untied or tied LM head. Parameter names are
// HF's ("model.layers.0.self_attn.q_proj.weight"), so loading and saving are name-for-name.
//
// Base parameters live in fp32 or bf16 and are frozen unless set_base_trainable(true) (full
// fine-tuning). Adapters attach at the hook points of model/hooks.h.
//
// A rank may hold only part of the model (a Shard, DESIGN.md §4): the layers of its pipeline
// stage, and under tensor parallelism its slice of every weight. The classes here compute as if
// they held every weight; model/parallelize.h cuts the stage for its rank of the TP group (q, k,
// v, gate and up split by outputs, o and down by inputs, the embedding and the LM head by
// vocabulary) after its modules are built and before a weight is allocated. The model never
// calls MPI; it uses the TP group's Communicator through the autograd functions of
// parallel/tensor_parallel.h.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/hf_config.h"
#include "model/hooks.h"
#include "model/weights.h"
#include "parallel/communicator.h"
#include "parallel/grid.h"

namespace spartan::model {

// Module names of the embedding and key/value adapters: their parameters are named
// "<name>.<parameter>" in named_parameters().
inline constexpr char kEmbeddingAdapterName[] = "embedding_adapter";
inline constexpr char kKvAdapterName[] = "prefix_encoder";

// The part of the model one rank holds. The default is the whole model on one process.
struct Shard {
  parallel::Communicator* tp = nullptr;     // tensor-parallel group; nullptr = no TP
  int64_t first_layer = 0, end_layer = -1;  // layers [first, end) of this stage; -1 = to the last
  bool embedding = true;                    // the input embedding (first pipeline stage)
  bool head = true;                         // the final norm and the LM head (last pipeline stage)
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, torch::TensorOptions options);
  torch::Tensor forward(const torch::Tensor& x);  // (..., dim)
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// A frozen linear projection without bias, with a LinearAdapter hook. Built whole and without
// memory: shard() may make it column-parallel (split by outputs) or row-parallel (split by
// inputs, its output all-reduced over the group, the adapter's partial output included) before
// materialize() allocates this rank's part of the weight.
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in_features, int64_t out_features, torch::TensorOptions options);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, in) -> (B, T, out)
  // This rank keeps `slice` of the weight (model/parallelize.h); before materialize().
  void shard(TpSlice slice, parallel::Communicator& tp);
  // Allocates the weight (uninitialised) at this rank's shape; once.
  void materialize();
  void attach(std::shared_ptr<LinearAdapter> adapter);
  void detach();
  const std::shared_ptr<LinearAdapter>& adapter() const { return adapter_; }
  const TpSlice& slice() const { return slice_; }
  int64_t in_features() const { return in_features_; }    // global
  int64_t out_features() const { return out_features_; }  // global
  torch::Tensor weight;                                   // (out, in), this rank's slice

 private:
  int64_t in_features_, out_features_;
  torch::TensorOptions options_;
  std::shared_ptr<LinearAdapter> adapter_;
  TpSlice slice_;
  parallel::Communicator* tp_ = nullptr;
};
TORCH_MODULE(Projection);

// Causal attention of queries (B, nh, T, hd) over keys and values (B, nkv, S, hd), nkv dividing
// nh (grouped-query attention): the last T of the S key positions are the queries' own, the
// S - T in front (prefix-tuning keys, or what a KV cache holds) are seen by every query.
// On a GPU through causal_attention_kernel; on the CPU written out (causal_attention_reference),
// which is Hugging Face's eager attention, the form the golden tests hold Spartan to in bf16
// (torch's fused CPU kernel differs from it by about 2% of the largest bf16 logit).
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v);
// Through at::scaled_dot_product_attention: flash or memory-efficient kernels on a GPU, which
// never store the T x S probabilities; GQA without repeating the keys and values.
torch::Tensor causal_attention_kernel(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v);
// Scores, mask, softmax in fp32, product: the reference the kernel is tested against.
torch::Tensor causal_attention_reference(const torch::Tensor& q, const torch::Tensor& k,
                                         const torch::Tensor& v);

// cos and sin tables of the rotary embedding for positions [offset, offset + T).
struct Rotary {
  torch::Tensor cos, sin;  // (T, head_dim), in the compute dtype
};
Rotary rotary_tables(const LlamaArch& arch, int64_t seq_len, torch::Dtype dtype,
                     const torch::Device& device, int64_t offset = 0);

// Keys and values of the positions a generation has run so far (model/generate.h): per layer of
// this rank, after the rotary embedding and before grouped-query repetition, prefix-tuning keys
// first. Feeding a sequence in pieces through forward(ids, &cache) gives the logits of feeding it
// whole.
struct KvCache {
  struct Layer {
    torch::Tensor k, v;  // (B, n_kv, S, head_dim)
  };
  std::vector<Layer> layers;
  int64_t positions = 0;  // sequence positions run (prompt tuning's virtual tokens included)
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const LlamaArch& arch, torch::TensorOptions options);
  // (B, T, H) -> (B, T, H); `prefix`: (2, P, this rank's n_kv·head_dim) keys and values in
  // front of the sequence's own, or undefined. With `cache`, its keys and values come first and
  // the new ones are appended to it (the prefix only while it is empty).
  torch::Tensor forward(const torch::Tensor& x, const Rotary& rope,
                        const torch::Tensor& prefix = {}, KvCache::Layer* cache = nullptr);
  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t num_heads, num_kv_heads, head_dim;  // this rank's heads
  parallel::Communicator* tp = nullptr;       // set by parallelize()
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const LlamaArch& arch, torch::TensorOptions options);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  parallel::Communicator* tp = nullptr;  // set by parallelize()
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const LlamaArch& arch, torch::TensorOptions options);
  torch::Tensor forward(const torch::Tensor& x, const Rotary& rope,
                        const torch::Tensor& prefix = {}, KvCache::Layer* cache = nullptr);
  // Whether a block adapter mixes positions (tiny attention): a KV cache cannot serve it.
  bool mixes_positions() const;
  // Allocates each projection's weight at this rank's shape (uninitialised). The model does it
  // after parallelize(); a layer built on its own (the layer-wise pruner) calls it once.
  void materialize();
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
  // `options`: the dtype and device of the base's weights (parallel::Runtime::base()); a dtype
  // alone means the CPU. The stage's modules are built whole, parallelize() cuts them for this
  // rank of `shard.tp`, then the weights are allocated (uninitialised).
  LlamaImpl(const LlamaArch& arch, torch::TensorOptions options, const Shard& shard = {});

  // (B, T) int64 token ids -> (B, T, V) fp32 logits. Needs every layer on this rank; under TP
  // the vocabulary slices are gathered. With `cache`, the ids continue the positions it holds
  // (see KvCache); prompt tuning's virtual tokens go in front of the first piece only.
  torch::Tensor forward(const torch::Tensor& input_ids, KvCache* cache = nullptr);
  // Whether forward(ids, &cache) is exact for this model (no block adapter mixes positions).
  bool supports_kv_cache() const;
  // Next-token losses (B, T-1) of ids with labels (-100 = ignored, loss 0), every layer on this
  // rank; under TP with the vocab-parallel cross-entropy (no rank builds full logits).
  torch::Tensor losses(const torch::Tensor& input_ids, const torch::Tensor& labels);

  // The three parts a pipeline stage runs.
  torch::Tensor embed(const torch::Tensor& input_ids);  // first stage: (B, T) -> (B, P + T, H)
  torch::Tensor run_layers(const torch::Tensor& h,      // this rank's layers
                           KvCache* cache = nullptr);
  torch::Tensor head_losses(const torch::Tensor& h,  // last stage: (B, P + T, H) -> (B, T-1)
                            const torch::Tensor& labels);
  // Last stage: (B, P + T, H) -> (B, T, V) fp32 logits of the T real positions (gathered
  // under TP).
  torch::Tensor head_logits(const torch::Tensor& h, int64_t T);

  const LlamaArch& arch() const { return arch_; }
  torch::Dtype dtype() const { return dtype_; }
  torch::Device device() const { return device_; }
  // The dtype products run in when the trainer and the evaluation run this model (a ComputeScope
  // around each forward pass, trainer/stage.h); fp32 unless the runtime says otherwise.
  torch::Dtype compute_dtype() const { return compute_dtype_; }
  void set_compute_dtype(torch::Dtype dtype) { compute_dtype_ = dtype; }
  // Whether training keeps only each layer's input and runs the layer again in the backward
  // pass (model/recompute.h; train.recompute = "layer").
  bool recomputes_layers() const { return recompute_; }
  void set_recompute_layers(bool on) { recompute_ = on; }
  int64_t num_layers() const { return arch_.num_layers; }  // of the whole model
  int64_t first_layer() const { return first_layer_; }     // this rank's layers: [first, end)
  int64_t end_layer() const { return first_layer_ + static_cast<int64_t>(layers_.size()); }
  bool has_embedding() const { return shard_.embedding; }
  bool has_head() const { return shard_.head; }
  bool is_sharded() const;  // holds less than the whole model
  parallel::Communicator& tp() const { return *tp_; }
  DecoderLayer& layer(int64_t i) { return layers_.at(i - first_layer_); }
  Projection& projection(int64_t layer, Proj p) { return this->layer(layer)->projection(p); }
  torch::Tensor& embed_weight() { return embed_; }
  torch::Tensor& lm_head_weight();  // the embedding when tied
  void attach_embedding(std::shared_ptr<EmbeddingAdapter> adapter);
  // Virtual tokens in front of the input (prompt tuning): what crosses a pipeline stage is
  // (B, P + T, H). attach_embedding() sets it; stages without the embedding are told.
  int64_t prompt_length() const { return prompt_length_; }
  void set_prompt_length(int64_t p) { prompt_length_ = p; }
  const std::shared_ptr<EmbeddingAdapter>& embedding_adapter() const { return embedding_adapter_; }
  // Prefix tuning: registered as "prefix_encoder"; nullptr detaches. Its parameters are
  // replicated over TP with partial gradients (each rank uses its own heads' columns).
  void attach_kv(std::shared_ptr<KvAdapter> adapter);
  const std::shared_ptr<KvAdapter>& kv_adapter() const { return kv_adapter_; }
  // The vocabulary-parallel style (model/parallelize.h): this rank holds rows
  // [rank·V/tp, (rank+1)·V/tp) of the embedding and the head, and the head's loss and logits
  // are computed over `tp`. Before the weights are allocated.
  void shard_vocabulary(parallel::Communicator& tp);

  // The base model's parameters under their Hugging Face names (tied head not repeated); this
  // rank's slices when sharded.
  NamedTensors base_parameters() const;
  // How the parameter `name` (as in named_parameters()) is held over the TP group.
  TpPlacement placement(const std::string& name) const;
  void set_base_trainable(bool trainable);
  // As HF's _init_weights: linears and embeddings ~ N(0, initializer_range), norms = 1.
  void init_weights();
  // Copies every base tensor (this rank's slice of it) from a folder; names, shapes and
  // completeness are checked.
  void load(const WeightStore& store);
  // config.json + safetensors (sharded past max_shard_bytes); the whole model only.
  void save(const std::string& folder, uint64_t max_shard_bytes = 5ull << 30) const;

 private:
  LlamaArch arch_;
  torch::Dtype dtype_;
  torch::Device device_;
  torch::Dtype compute_dtype_ = torch::kFloat32;
  bool recompute_ = false;
  torch::TensorOptions options_;
  Shard shard_;
  std::unique_ptr<parallel::Communicator> solo_;  // the TP group when there is none
  parallel::Communicator* tp_;
  int64_t first_layer_ = 0;
  // Allocates every weight at this rank's shape and records how each lies over the TP group.
  void materialize();

  int64_t vocab_begin_ = 0, vocab_rows_ = 0;  // this rank's rows of the embedding and the head
  struct Slice {
    int64_t dim = -1;  // -1: whole tensor
    int64_t begin = 0, end = 0;
    std::vector<int64_t> global_shape;
  };
  std::map<std::string, Slice> slices_;                            // every base parameter
  std::shared_ptr<torch::nn::Module> embed_module_, head_module_;  // nullptr where not held
  torch::Tensor embed_;  // (V, H), "model.embed_tokens.weight"
  std::vector<DecoderLayer> layers_;
  RMSNorm norm_{nullptr};
  torch::Tensor lm_head_;  // undefined when tied
  std::vector<std::string> base_names_;
  std::shared_ptr<EmbeddingAdapter> embedding_adapter_;
  std::shared_ptr<KvAdapter> kv_adapter_;
  int64_t prompt_length_ = 0;
};
TORCH_MODULE(Llama);

// This rank's part of the model on a grid: its TP group, the layers of its pipeline stage
// (`stage_layers`: layers per stage, empty = an even split with the remainder on the first
// stages), the embedding on the first stage, the head on the last.
Shard make_shard(parallel::Grid& grid, int64_t num_layers,
                 const std::vector<int64_t>& stage_layers = {});

// (out_features, in_features) of projection p in every layer of the whole model.
std::pair<int64_t, int64_t> projection_shape(const LlamaArch& arch, Proj p);

// Loads a model folder: architecture from config.json, weights (this rank's part) from
// safetensors.
// safetensors, one tensor at a time through host memory onto `options`' device.
Llama load_llama(const std::string& folder, torch::TensorOptions options, const Shard& shard = {});

// Next-token cross-entropy per position: logits (B, T, V), labels (B, T) with -100 = ignored.
// Returns (B, T-1) losses, 0 where the label is ignored.
torch::Tensor token_losses(const torch::Tensor& logits, const torch::Tensor& labels);
// Mean over the positions that are not ignored (HF's loss).
torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace spartan::model
