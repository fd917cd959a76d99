#include "model/llama.h"

#include <cmath>
#include <set>

#include "common/error.h"
#include "common/files.h"

namespace spartan::model {

namespace {
constexpr const char* kProjNames[] = {"q", "k", "v", "o", "gate", "up", "down"};


// (B, T, ...) -> (..., second half negated and swapped): HF's rotate_half.
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

std::string shape_str(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
}  // namespace

const char* proj_name(Proj p) { return kProjNames[static_cast<int>(p)]; }

std::string projection_name(int64_t layer, Proj p) {
  const bool attn = p == Proj::q || p == Proj::k || p == Proj::v || p == Proj::o;
  return "model.layers." + std::to_string(layer) + (attn ? ".self_attn." : ".mlp.") +
         proj_name(p) + "_proj";
}

bool parse_proj(const std::string& name, Proj* out) {
  for (Proj p : kAllProjections)
    if (name == proj_name(p)) {
      *out = p;
      return true;
    }
  return false;
}

// ---- RMSNorm ----------------------------------------------------------------------------------

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, torch::Dtype dtype) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}, torch::dtype(dtype)), false);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto h = x.to(torch::kFloat32);
  auto variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(variance + eps);
  return weight * h.to(x.scalar_type());
}

// ---- Projection -------------------------------------------------------------------------------

ProjectionImpl::ProjectionImpl(int64_t in_features, int64_t out_features, torch::Dtype dtype) {
  weight = register_parameter("weight", torch::empty({out_features, in_features},
                                                     torch::dtype(dtype)),
                              false);
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor& x) {
  if (adapter_) return adapter_->forward(x, weight);
  return torch::linear(x, weight);
}

void ProjectionImpl::attach(std::shared_ptr<LinearAdapter> adapter) {
  if (adapter_) detach();
  adapter_ = register_module("adapter", std::move(adapter));
}

void ProjectionImpl::detach() {
  if (!adapter_) return;
  unregister_module("adapter");
  adapter_.reset();
}

// ---- rotary embedding -------------------------------------------------------------------------

Rotary rotary_tables(const LlamaArch& arch, int64_t seq_len, torch::Dtype dtype,
                     const torch::Device& device, int64_t offset) {
  const int64_t d = arch.head_dim();
  auto f32 = torch::dtype(torch::kFloat32).device(device);
  // inv_freq = 1 / theta^(2i/d), computed in fp32 as HF does.
  auto exponents = torch::arange(0, d, 2, torch::dtype(torch::kInt64).device(device))
                       .to(torch::kFloat32) / static_cast<double>(d);
  auto inv_freq = 1.0 / torch::pow(arch.rope_theta, exponents);                      // (d/2)
  auto pos = torch::arange(offset, offset + seq_len, f32.dtype(torch::kInt64)).to(torch::kFloat32);
  if (arch.rope_scaling_factor != 1.0) pos = pos / arch.rope_scaling_factor;
  auto freqs = torch::outer(pos, inv_freq);                                            // (T, d/2)
  auto emb = torch::cat({freqs, freqs}, -1);                                           // (T, d)
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// ---- attention --------------------------------------------------------------------------------

AttentionImpl::AttentionImpl(const LlamaArch& a, torch::Dtype dtype)
    : num_heads(a.num_heads), num_kv_heads(a.num_kv_heads), head_dim(a.head_dim()) {
  const int64_t h = a.hidden_size;
  q_proj = register_module("q_proj", Projection(h, num_heads * head_dim, dtype));
  k_proj = register_module("k_proj", Projection(h, num_kv_heads * head_dim, dtype));
  v_proj = register_module("v_proj", Projection(h, num_kv_heads * head_dim, dtype));
  o_proj = register_module("o_proj", Projection(num_heads * head_dim, h, dtype));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const Rotary& rope) {
  const int64_t B = x.size(0), T = x.size(1);
  auto q = q_proj(x).view({B, T, num_heads, head_dim}).transpose(1, 2);     // (B, nh, T, hd)
  auto k = k_proj(x).view({B, T, num_kv_heads, head_dim}).transpose(1, 2);  // (B, nkv, T, hd)
  auto v = v_proj(x).view({B, T, num_kv_heads, head_dim}).transpose(1, 2);  // (B, nkv, T, hd)
  q = q * rope.cos + rotate_half(q) * rope.sin;
  k = k * rope.cos + rotate_half(k) * rope.sin;
  if (num_kv_heads != num_heads) {  // grouped-query attention: repeat each KV head
    const int64_t rep = num_heads / num_kv_heads;
    k = k.unsqueeze(2).expand({B, num_kv_heads, rep, T, head_dim}).reshape({B, num_heads, T,
                                                                            head_dim});
    v = v.unsqueeze(2).expand({B, num_kv_heads, rep, T, head_dim}).reshape({B, num_heads, T,
                                                                            head_dim});
  }
  auto scores = torch::matmul(q, k.transpose(2, 3)) / std::sqrt(static_cast<double>(head_dim));
  auto future = torch::ones({T, T}, torch::dtype(torch::kBool).device(x.device())).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());  // (B, nh, T, T)
  auto probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  auto out = torch::matmul(probs, v);                                           // (B, nh, T, hd)
  return o_proj(out.transpose(1, 2).reshape({B, T, num_heads * head_dim}));
}

// ---- MLP --------------------------------------------------------------------------------------

MLPImpl::MLPImpl(const LlamaArch& a, torch::Dtype dtype) {
  gate_proj = register_module("gate_proj", Projection(a.hidden_size, a.intermediate_size, dtype));
  up_proj = register_module("up_proj", Projection(a.hidden_size, a.intermediate_size, dtype));
  down_proj = register_module("down_proj", Projection(a.intermediate_size, a.hidden_size, dtype));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

// ---- decoder layer ----------------------------------------------------------------------------

DecoderLayerImpl::DecoderLayerImpl(const LlamaArch& a, torch::Dtype dtype) {
  self_attn = register_module("self_attn", Attention(a, dtype));
  mlp = register_module("mlp", MLP(a, dtype));
  input_layernorm = register_module("input_layernorm", RMSNorm(a.hidden_size, a.rms_norm_eps,
                                                               dtype));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", RMSNorm(a.hidden_size, a.rms_norm_eps, dtype));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const Rotary& rope) {
  auto h = input_layernorm(x);
  auto a = self_attn(h, rope);
  if (after_attention_) a = after_attention_->forward(h, a);
  auto y = x + a;
  h = post_attention_layernorm(y);
  auto m = mlp(h);
  if (after_mlp_) m = after_mlp_->forward(h, m);
  return y + m;
}

Projection& DecoderLayerImpl::projection(Proj p) {
  switch (p) {
    case Proj::q: return self_attn->q_proj;
    case Proj::k: return self_attn->k_proj;
    case Proj::v: return self_attn->v_proj;
    case Proj::o: return self_attn->o_proj;
    case Proj::gate: return mlp->gate_proj;
    case Proj::up: return mlp->up_proj;
    case Proj::down: return mlp->down_proj;
  }
  throw Error("unknown projection", "model", "report this as a bug");
}

namespace {
void attach_block(torch::nn::Module& owner, std::shared_ptr<BlockAdapter>& slot,
                  const std::string& name, std::shared_ptr<BlockAdapter> adapter) {
  if (slot) owner.unregister_module(name);
  slot = adapter ? owner.register_module(name, std::move(adapter)) : nullptr;
}
}  // namespace

void DecoderLayerImpl::attach_after_attention(std::shared_ptr<BlockAdapter> adapter) {
  attach_block(*this, after_attention_, "attention_adapter", std::move(adapter));
}

void DecoderLayerImpl::attach_after_mlp(std::shared_ptr<BlockAdapter> adapter) {
  attach_block(*this, after_mlp_, "mlp_adapter", std::move(adapter));
}

// ---- the whole model --------------------------------------------------------------------------

LlamaImpl::LlamaImpl(const LlamaArch& arch, torch::Dtype dtype) : arch_(arch), dtype_(dtype) {
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16)
    throw Error(std::string("model dtype ") + c10::toString(dtype) + " is not supported",
                "model", "use fp32 or bf16");
  auto inner = register_module("model", std::make_shared<torch::nn::Module>());
  auto embed = inner->register_module("embed_tokens", std::make_shared<torch::nn::Module>());
  embed_ = embed->register_parameter(
      "weight", torch::empty({arch.vocab_size, arch.hidden_size}, torch::dtype(dtype)), false);
  auto list = inner->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < arch.num_layers; ++i) {
    layers_.emplace_back(arch, dtype);
    list->push_back(layers_.back());
  }
  norm_ = inner->register_module("norm", RMSNorm(arch.hidden_size, arch.rms_norm_eps, dtype));
  if (!arch.tie_word_embeddings) {
    auto head = register_module("lm_head", std::make_shared<torch::nn::Module>());
    lm_head_ = head->register_parameter(
        "weight", torch::empty({arch.vocab_size, arch.hidden_size}, torch::dtype(dtype)), false);
  }
  for (const auto& p : named_parameters()) base_names_.push_back(p.key());
}

torch::Tensor& LlamaImpl::lm_head_weight() { return arch_.tie_word_embeddings ? embed_ : lm_head_; }

void LlamaImpl::attach_embedding(std::shared_ptr<EmbeddingAdapter> adapter) {
  if (embedding_adapter_) unregister_module("embedding_adapter");
  embedding_adapter_ = adapter ? register_module("embedding_adapter", std::move(adapter)) : nullptr;
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& input_ids) {
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be (B, T)");
  auto h = torch::embedding(embed_, input_ids);  // (B, T, H)
  int64_t virtual_tokens = 0;
  if (embedding_adapter_) {
    virtual_tokens = embedding_adapter_->num_virtual_tokens();
    h = embedding_adapter_->forward(h);  // (B, P + T, H)
  }
  const Rotary rope = rotary_tables(arch_, h.size(1), h.scalar_type(), h.device());
  for (auto& layer : layers_) h = layer(h, rope);
  h = norm_(h);
  if (virtual_tokens > 0) h = h.narrow(1, virtual_tokens, h.size(1) - virtual_tokens);
  return torch::linear(h, lm_head_weight()).to(torch::kFloat32);  // (B, T, V)
}

NamedTensors LlamaImpl::base_parameters() const {
  NamedTensors out;
  auto params = named_parameters();
  for (const auto& name : base_names_) out.emplace_back(name, params[name]);
  return out;
}

void LlamaImpl::set_base_trainable(bool trainable) {
  for (auto& [name, t] : base_parameters()) t.set_requires_grad(trainable);
}

void LlamaImpl::init_weights() {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : base_parameters()) {
    if (name.find("norm") != std::string::npos)
      t.fill_(1.0);
    else
      t.normal_(0.0, arch_.initializer_range);
  }
}

void LlamaImpl::load(const WeightStore& store) {
  torch::NoGradGuard no_grad;
  std::set<std::string> expected;
  for (auto& [name, t] : base_parameters()) {
    expected.insert(name);
    if (!store.has(name))
      throw Error("tensor '" + name + "' is missing", store.folder(),
                  "check that config.json matches the weights");
    const TensorInfo& info = store.info(name);
    if (info.shape != std::vector<int64_t>(t.sizes().begin(), t.sizes().end()))
      throw Error("tensor '" + name + "' has shape " + shape_str(info.shape) + ", config.json "
                  "implies " + shape_str(t.sizes()),
                  store.file_of(name).path(), "check that config.json matches the weights");
    t.copy_(store.load(name, dtype_));
  }
  for (const auto& name : store.names()) {
    // HF drops rotary caches from safetensors; a tied model may still carry lm_head.weight.
    if (expected.count(name) || name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (name == "lm_head.weight" && arch_.tie_word_embeddings) continue;
    throw Error("unexpected tensor '" + name + "'", store.file_of(name).path(),
                "check that the folder holds a LlamaForCausalLM");
  }
}

void LlamaImpl::save(const std::string& folder, uint64_t max_shard_bytes) const {
  make_dirs(folder);
  LlamaArch arch = arch_;
  arch.torch_dtype = dtype_ == torch::kBFloat16 ? "bfloat16" : "float32";
  write_hf_config(folder, arch);
  save_weights(folder, base_parameters(), max_shard_bytes);
}

Llama load_llama(const std::string& folder, torch::Dtype dtype) {
  LlamaArch arch = read_hf_config(folder);
  WeightStore store(folder);
  Llama model(arch, dtype);
  model->load(store);
  return model;
}

// ---- loss -------------------------------------------------------------------------------------

torch::Tensor token_losses(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
  auto shifted = logits.narrow(1, 0, T - 1).reshape({-1, V}).to(torch::kFloat32);
  auto target = labels.narrow(1, 1, T - 1).reshape({-1});
  auto loss = torch::nn::functional::cross_entropy(
      shifted, target,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(-100));
  return loss.view({B, T - 1});
}

torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  auto losses = token_losses(logits, labels);
  auto counted = labels.narrow(1, 1, labels.size(1) - 1).ne(-100);
  return losses.sum() / counted.sum().clamp_min(1);
}

}  // namespace spartan::model
