#include "model/llama.h"

#include <malloc.h>

#include <cmath>
#include <set>

#include "common/error.h"
#include "common/files.h"
#include "model/parallelize.h"
#include "model/recompute.h"
#include "parallel/tensor_parallel.h"

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
  return "model.layers." + std::to_string(layer) + (attn ? ".self_attn." : ".mlp.") + proj_name(p) +
         "_proj";
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

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, torch::TensorOptions options) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}, options), false);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto h = x.to(torch::kFloat32);
  auto variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(variance + eps);
  return weight * h.to(x.scalar_type());
}

// ---- Projection -------------------------------------------------------------------------------

ProjectionImpl::ProjectionImpl(int64_t in_features, int64_t out_features,
                               torch::TensorOptions options)
    : in_features_(in_features), out_features_(out_features), options_(options) {}

void ProjectionImpl::shard(TpSlice slice, parallel::Communicator& tp) {
  TORCH_CHECK(!weight.defined(), "a projection is sharded before its weight is allocated");
  slice_ = slice;
  tp_ = &tp;
}

void ProjectionImpl::materialize() {
  if (weight.defined()) return;
  const int64_t out = slice_.split == TpSplit::output ? slice_.size() : out_features_;
  const int64_t in = slice_.split == TpSplit::input ? slice_.size() : in_features_;
  weight = register_parameter("weight", torch::empty({out, in}, options_), false);
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(weight.defined(), "a projection ran before its weight was allocated");
  auto y = adapter_ ? adapter_->forward(x, weight) : torch::linear(x, weight);
  if (slice_.split == TpSplit::input) y = parallel::reduce_from_group(y, *tp_);
  return y;
}

void ProjectionImpl::attach(std::shared_ptr<LinearAdapter> adapter) {
  if (adapter_) detach();
  adapter->to(weight.device());  // adapters are made in host memory
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
  auto exponents =
      torch::arange(0, d, 2, torch::dtype(torch::kInt64).device(device)).to(torch::kFloat32) /
      static_cast<double>(d);
  auto inv_freq = 1.0 / torch::pow(arch.rope_theta, exponents);  // (d/2)
  auto pos = torch::arange(offset, offset + seq_len, f32.dtype(torch::kInt64)).to(torch::kFloat32);
  if (arch.rope_scaling_factor != 1.0) pos = pos / arch.rope_scaling_factor;
  auto freqs = torch::outer(pos, inv_freq);   // (T, d/2)
  auto emb = torch::cat({freqs, freqs}, -1);  // (T, d)
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// ---- attention --------------------------------------------------------------------------------

AttentionImpl::AttentionImpl(const LlamaArch& a, torch::TensorOptions options)
    : num_heads(a.num_heads), num_kv_heads(a.num_kv_heads), head_dim(a.head_dim()) {
  const int64_t h = a.hidden_size, q = a.num_heads * head_dim, kv = a.num_kv_heads * head_dim;
  q_proj = register_module("q_proj", Projection(h, q, options));
  k_proj = register_module("k_proj", Projection(h, kv, options));
  v_proj = register_module("v_proj", Projection(h, kv, options));
  o_proj = register_module("o_proj", Projection(q, h, options));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& input, const Rotary& rope,
                                     const torch::Tensor& prefix, KvCache::Layer* cache) {
  // Column-parallel q, k, v share one input: one all-reduce of its gradient.
  const auto x = tp ? parallel::copy_to_group(input, *tp) : input;
  const int64_t B = x.size(0), T = x.size(1);
  auto q = q_proj(x).view({B, T, num_heads, head_dim}).transpose(1, 2);     // (B, nh, T, hd)
  auto k = k_proj(x).view({B, T, num_kv_heads, head_dim}).transpose(1, 2);  // (B, nkv, T, hd)
  auto v = v_proj(x).view({B, T, num_kv_heads, head_dim}).transpose(1, 2);  // (B, nkv, T, hd)
  q = q * rope.cos + rotate_half(q) * rope.sin;
  k = k * rope.cos + rotate_half(k) * rope.sin;
  const bool cached = cache && cache->k.defined();
  if (prefix.defined() && !cached) {  // prefix tuning: (2, n, n_kv·hd) in front of the keys, values
    const int64_t n = prefix.size(1);
    auto heads = [&](const torch::Tensor& t) {
      return t.to(k.scalar_type())
          .view({n, num_kv_heads, head_dim})
          .transpose(0, 1)
          .unsqueeze(0)
          .expand({B, num_kv_heads, n, head_dim});
    };
    k = torch::cat({heads(prefix[0]), k}, 2);
    v = torch::cat({heads(prefix[1]), v}, 2);
  }
  if (cached) {  // the positions already run, then these
    k = torch::cat({cache->k, k}, 2);
    v = torch::cat({cache->v, v}, 2);
  }
  if (cache) {
    cache->k = k;
    cache->v = v;
  }
  auto out = causal_attention(q, k, v);  // (B, nh, T, hd)
  return o_proj(out.transpose(1, 2).reshape({B, T, num_heads * head_dim}));
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v) {
  return q.is_cuda() ? causal_attention_kernel(q, k, v) : causal_attention_reference(q, k, v);
}

torch::Tensor causal_attention_kernel(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v) {
  const int64_t T = q.size(2), S = k.size(2), P = S - T;
  const bool gqa = q.size(1) != k.size(1);
  if (P == 0)  // the causal kernels (flash or memory-efficient on a GPU)
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt,
                                            gqa);
  // Query t sees the P positions in front and the sequence up to t: key j where j <= t + P.
  auto allowed = torch::ones({T, S}, torch::dtype(torch::kBool).device(q.device())).tril(P);
  return at::scaled_dot_product_attention(q, k, v, allowed, 0.0, false, std::nullopt, gqa);
}

torch::Tensor causal_attention_reference(const torch::Tensor& q, const torch::Tensor& k,
                                         const torch::Tensor& v) {
  const int64_t B = q.size(0), nh = q.size(1), T = q.size(2), hd = q.size(3);
  const int64_t nkv = k.size(1), S = k.size(2), P = S - T;
  auto kk = k, vv = v;
  if (nkv != nh) {  // grouped-query attention: repeat each KV head
    const int64_t rep = nh / nkv;
    kk = k.unsqueeze(2).expand({B, nkv, rep, S, hd}).reshape({B, nh, S, hd});
    vv = v.unsqueeze(2).expand({B, nkv, rep, S, hd}).reshape({B, nh, S, hd});
  }
  auto scores = torch::matmul(q, kk.transpose(2, 3)) / std::sqrt(static_cast<double>(hd));
  auto future = torch::ones({T, S}, torch::dtype(torch::kBool).device(q.device())).triu(1 + P);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());  // (B, nh, T, S)
  auto probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  return torch::matmul(probs, vv);
}

// ---- MLP --------------------------------------------------------------------------------------

MLPImpl::MLPImpl(const LlamaArch& a, torch::TensorOptions options) {
  const int64_t H = a.hidden_size, I = a.intermediate_size;
  gate_proj = register_module("gate_proj", Projection(H, I, options));
  up_proj = register_module("up_proj", Projection(H, I, options));
  down_proj = register_module("down_proj", Projection(I, H, options));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& input) {
  const auto x = tp ? parallel::copy_to_group(input, *tp) : input;
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

// ---- decoder layer ----------------------------------------------------------------------------

DecoderLayerImpl::DecoderLayerImpl(const LlamaArch& a, torch::TensorOptions options) {
  self_attn = register_module("self_attn", Attention(a, options));
  mlp = register_module("mlp", MLP(a, options));
  input_layernorm =
      register_module("input_layernorm", RMSNorm(a.hidden_size, a.rms_norm_eps, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(a.hidden_size, a.rms_norm_eps, options));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const Rotary& rope,
                                        const torch::Tensor& prefix, KvCache::Layer* cache) {
  auto h = input_layernorm(x);
  auto a = self_attn->forward(h, rope, prefix, cache);
  if (after_attention_) a = after_attention_->forward(h, a);
  auto y = x + a;
  h = post_attention_layernorm(y);
  auto m = mlp(h);
  if (after_mlp_) m = after_mlp_->forward(h, m);
  return y + m;
}

void DecoderLayerImpl::materialize() {
  for (Proj p : kAllProjections) projection(p)->materialize();
}

bool DecoderLayerImpl::mixes_positions() const {
  return (after_attention_ && after_attention_->mixes_positions()) ||
         (after_mlp_ && after_mlp_->mixes_positions());
}

Projection& DecoderLayerImpl::projection(Proj p) {
  switch (p) {
    case Proj::q:
      return self_attn->q_proj;
    case Proj::k:
      return self_attn->k_proj;
    case Proj::v:
      return self_attn->v_proj;
    case Proj::o:
      return self_attn->o_proj;
    case Proj::gate:
      return mlp->gate_proj;
    case Proj::up:
      return mlp->up_proj;
    case Proj::down:
      return mlp->down_proj;
  }
  throw Error("unknown projection", "model", "report this as a bug");
}

namespace {
void attach_block(torch::nn::Module& owner, std::shared_ptr<BlockAdapter>& slot,
                  const std::string& name, std::shared_ptr<BlockAdapter> adapter,
                  const torch::Device& device) {
  if (slot) owner.unregister_module(name);
  if (adapter) adapter->to(device);  // adapters are made in host memory
  slot = adapter ? owner.register_module(name, std::move(adapter)) : nullptr;
}
}  // namespace

void DecoderLayerImpl::attach_after_attention(std::shared_ptr<BlockAdapter> adapter) {
  attach_block(*this, after_attention_, "attention_adapter", std::move(adapter),
               input_layernorm->weight.device());
}

void DecoderLayerImpl::attach_after_mlp(std::shared_ptr<BlockAdapter> adapter) {
  attach_block(*this, after_mlp_, "mlp_adapter", std::move(adapter),
               input_layernorm->weight.device());
}

// ---- the whole model --------------------------------------------------------------------------

LlamaImpl::LlamaImpl(const LlamaArch& arch, torch::TensorOptions options, const Shard& shard)
    : arch_(arch),
      dtype_(c10::typeMetaToScalarType(options.dtype())),
      device_(options.device()),
      options_(options),
      shard_(shard) {
  if (dtype_ != torch::kFloat32 && dtype_ != torch::kBFloat16 && dtype_ != torch::kFloat16)
    throw Error(std::string("model dtype ") + c10::toString(dtype_) + " is not supported", "model",
                "use fp32, bf16 or fp16");
  solo_ = parallel::make_solo("tp");
  tp_ = shard.tp ? shard.tp : solo_.get();
  vocab_rows_ = arch.vocab_size;
  first_layer_ = shard.first_layer;
  const int64_t end = shard.end_layer < 0 ? arch.num_layers : shard.end_layer;

  auto inner = register_module("model", std::make_shared<torch::nn::Module>());
  const bool tied = arch.tie_word_embeddings;
  if (shard.embedding || (shard.head && tied))
    embed_module_ = inner->register_module("embed_tokens", std::make_shared<torch::nn::Module>());
  auto list = inner->register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t i = first_layer_; i < end; ++i) {
    layers_.emplace_back(arch, options);
    list->register_module(std::to_string(i), layers_.back());
  }
  if (shard.head) {
    norm_ = inner->register_module("norm", RMSNorm(arch.hidden_size, arch.rms_norm_eps, options));
    if (!tied) head_module_ = register_module("lm_head", std::make_shared<torch::nn::Module>());
  }
  if (shard.tp && shard.tp->size() > 1) parallelize(*this, *shard.tp);
  materialize();
}

void LlamaImpl::shard_vocabulary(parallel::Communicator& tp) {
  TORCH_CHECK(!embed_.defined() && !lm_head_.defined(),
              "the vocabulary is sharded before the weights are allocated");
  tp_ = &tp;
  vocab_rows_ = arch_.vocab_size / tp.size();
  vocab_begin_ = tp.rank() * vocab_rows_;
}

void LlamaImpl::materialize() {
  const int64_t V = arch_.vocab_size, H = arch_.hidden_size;
  if (embed_module_)
    embed_ = embed_module_->register_parameter("weight", torch::empty({vocab_rows_, H}, options_),
                                               false);
  for (auto& layer : layers_) layer->materialize();
  if (head_module_)
    lm_head_ =
        head_module_->register_parameter("weight", torch::empty({vocab_rows_, H}, options_), false);
  for (const auto& p : named_parameters()) {
    base_names_.push_back(p.key());
    Slice sl;
    sl.global_shape.assign(p.value().sizes().begin(), p.value().sizes().end());
    if (p.key() == "model.embed_tokens.weight" || p.key() == "lm_head.weight") {
      sl.global_shape[0] = V;
      if (vocab_rows_ != V) sl = {0, vocab_begin_, vocab_begin_ + vocab_rows_, sl.global_shape};
    }
    slices_[p.key()] = sl;
  }
  for (int64_t l = first_layer_; l < end_layer(); ++l)
    for (Proj p : kAllProjections) {
      const Projection& proj = projection(l, p);
      Slice& sl = slices_.at(projection_name(l, p) + ".weight");
      sl.global_shape = {proj->out_features(), proj->in_features()};
      const TpSlice& t = proj->slice();
      if (t.split != TpSplit::none)
        sl = {t.split == TpSplit::output ? 0 : 1, t.begin, t.end, sl.global_shape};
    }
}

bool LlamaImpl::is_sharded() const {
  return tp_->size() > 1 || !shard_.embedding || !shard_.head || first_layer_ != 0 ||
         end_layer() != arch_.num_layers;
}

torch::Tensor& LlamaImpl::lm_head_weight() { return arch_.tie_word_embeddings ? embed_ : lm_head_; }

void LlamaImpl::attach_embedding(std::shared_ptr<EmbeddingAdapter> adapter) {
  if (embedding_adapter_) unregister_module(kEmbeddingAdapterName);
  if (adapter) adapter->to(device_);  // adapters are made in host memory
  embedding_adapter_ =
      adapter ? register_module(kEmbeddingAdapterName, std::move(adapter)) : nullptr;
  prompt_length_ = embedding_adapter_ ? embedding_adapter_->num_virtual_tokens() : 0;
}

torch::Tensor LlamaImpl::embed(const torch::Tensor& input_ids) {
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be (B, T)");
  TORCH_CHECK(shard_.embedding, "embed() on a rank without the embedding");
  auto h = parallel::vocab_parallel_embedding(input_ids, embed_, vocab_begin_, *tp_);  // (B, T, H)
  if (embedding_adapter_) h = embedding_adapter_->forward(h);  // (B, P + T, H)
  return h;
}

torch::Tensor LlamaImpl::run_layers(const torch::Tensor& input, KvCache* cache) {
  // Prefix tuning: every layer's keys and values at once, (L, 2, P, n_kv·hd) for the whole
  // model; each layer takes its own and this rank's KV heads, and the real tokens' positions
  // start after the prefix.
  torch::Tensor prefixes;
  int64_t offset = 0;
  if (kv_adapter_) {
    prefixes = kv_adapter_->forward();
    offset = kv_adapter_->num_virtual_tokens();
  }
  if (cache) {
    offset += cache->positions;
    cache->layers.resize(layers_.size());
  }
  const Rotary rope =
      rotary_tables(arch_, input.size(1), input.scalar_type(), input.device(), offset);
  auto h = input;
  for (int64_t i = 0; i < static_cast<int64_t>(layers_.size()); ++i) {
    torch::Tensor prefix;
    if (prefixes.defined()) {
      const TpSlice& kv = layers_[i]->self_attn->k_proj->slice();
      prefix = prefixes[first_layer_ + i];
      if (kv.split != TpSplit::none) prefix = prefix.narrow(-1, kv.begin, kv.size());
    }
    if (recompute_ && !cache)
      h = recomputed_layer(*layers_[i], h, rope, prefix);
    else
      h = layers_[i]->forward(h, rope, prefix, cache ? &cache->layers[i] : nullptr);
  }
  if (cache) cache->positions += input.size(1);
  return h;
}

void LlamaImpl::attach_kv(std::shared_ptr<KvAdapter> adapter) {
  if (kv_adapter_) unregister_module(kKvAdapterName);
  if (adapter) adapter->to(device_);  // adapters are made in host memory
  kv_adapter_ = adapter ? register_module(kKvAdapterName, std::move(adapter)) : nullptr;
}

namespace {
// Drops the outputs of the P virtual tokens in front (prompt tuning): (B, P + T, H) -> (B, T, H).
torch::Tensor drop_virtual(const torch::Tensor& h, int64_t T) {
  return h.size(1) == T ? h : h.narrow(1, h.size(1) - T, T);
}
}  // namespace

torch::Tensor LlamaImpl::head_losses(const torch::Tensor& hidden, const torch::Tensor& labels) {
  TORCH_CHECK(shard_.head, "head_losses() on a rank without the LM head");
  const int64_t B = labels.size(0), T = labels.size(1);
  auto h = parallel::copy_to_group(drop_virtual(norm_(hidden), T), *tp_);
  auto logits = torch::linear(h, lm_head_weight());  // (B, T, V/tp)
  auto shifted = logits.narrow(1, 0, T - 1).reshape({-1, logits.size(-1)}).to(torch::kFloat32);
  auto target = labels.narrow(1, 1, T - 1).reshape({-1});
  return parallel::vocab_parallel_cross_entropy(shifted, target, vocab_begin_, *tp_)
      .view({B, T - 1});
}

bool LlamaImpl::supports_kv_cache() const {
  for (const auto& layer : layers_)
    if (layer->mixes_positions()) return false;
  return true;
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& input_ids, KvCache* cache) {
  TORCH_CHECK(shard_.embedding && shard_.head && end_layer() - first_layer_ == arch_.num_layers,
              "forward() needs every layer on this rank");
  // Prompt tuning's virtual tokens lead the sequence: only its first piece gets them.
  const auto e = cache && cache->positions > 0
                     ? parallel::vocab_parallel_embedding(input_ids, embed_, vocab_begin_, *tp_)
                     : embed(input_ids);
  return head_logits(run_layers(e, cache), input_ids.size(1));
}

torch::Tensor LlamaImpl::head_logits(const torch::Tensor& hidden, int64_t T) {
  TORCH_CHECK(shard_.head, "head_logits() on a rank without the LM head");
  auto h = parallel::copy_to_group(drop_virtual(norm_(hidden), T), *tp_);
  auto logits = torch::linear(h, lm_head_weight()).to(torch::kFloat32);  // (B, T, V/tp)
  return parallel::gather_from_group(logits, *tp_);
}

torch::Tensor LlamaImpl::losses(const torch::Tensor& input_ids, const torch::Tensor& labels) {
  return head_losses(run_layers(embed(input_ids)), labels);
}

TpPlacement LlamaImpl::placement(const std::string& name) const {
  if (auto it = slices_.find(name); it != slices_.end())
    return it->second.dim < 0 ? TpPlacement{} : TpPlacement{TpPlacement::sharded, it->second.dim};
  const std::string tag = ".adapter.";
  const auto at = name.find(tag);
  if (at != std::string::npos && name.compare(0, 13, "model.layers.") == 0) {
    const int64_t l = std::stoll(name.substr(13));
    for (Proj p : kAllProjections)
      if (name.compare(0, at, projection_name(l, p)) == 0) {
        const auto& proj = const_cast<LlamaImpl*>(this)->projection(l, p);
        if (proj->adapter()) return proj->adapter()->placement(name.substr(at + tag.size()));
      }
  }
  // Prefix tuning's encoder: every rank computes all heads' prefixes and uses its own.
  if (name.rfind(std::string(kKvAdapterName) + ".", 0) == 0 && tp_->size() > 1)
    return {TpPlacement::partial};
  return {};  // embedding and block adapters, norms: replicated
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
    const Slice& sl = slices_.at(name);
    if (info.shape != sl.global_shape)
      throw Error("tensor '" + name + "' has shape " + shape_str(info.shape) +
                      ", config.json "
                      "implies " +
                      shape_str(sl.global_shape),
                  store.file_of(name).path(), "check that config.json matches the weights");
    if (sl.dim < 0)
      t.copy_(store.load(name, dtype_));
    else if (sl.dim == 0)
      t.copy_(store.load_rows(name, sl.begin, sl.end, dtype_));
    else
      t.copy_(store.load_cols(name, sl.begin, sl.end, dtype_));
    // A column slice touches every page of the tensor: the mapped pages are dropped, so that a
    // rank's resident memory is its shard, not the tensors its slices were cut from.
    store.file_of(name).release(info);
    // A NaN or Inf in the frozen base would train a NaN adapter: one pass over what was read.
    if (!torch::isfinite(t).all().item<bool>())
      throw Error("tensor '" + name + "' holds NaN or Inf values", store.file_of(name).path(),
                  "repair or re-export the model's weights");
  }
  for (const auto& name : store.names()) {
    // HF drops rotary caches from safetensors; a tied model may still carry lm_head.weight.
    if (expected.count(name) || name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (name == "lm_head.weight" && arch_.tie_word_embeddings) continue;
    if (is_sharded()) continue;  // another rank's layers
    throw Error("unexpected tensor '" + name + "'", store.file_of(name).path(),
                "check that the folder holds a LlamaForCausalLM");
  }
}

void LlamaImpl::save(const std::string& folder, uint64_t max_shard_bytes) const {
  if (is_sharded())
    throw Error("a shard of a model cannot be saved as a model folder", folder,
                "save from a single process (spartan merge)");
  make_dirs(folder);
  LlamaArch arch = arch_;
  arch.torch_dtype = dtype_ == torch::kBFloat16  ? "bfloat16"
                     : dtype_ == torch::kFloat16 ? "float16"
                                                 : "float32";
  write_hf_config(folder, arch);
  save_weights(folder, base_parameters(), max_shard_bytes);
}

Shard make_shard(parallel::Grid& grid, int64_t num_layers,
                 const std::vector<int64_t>& stage_layers) {
  const int64_t pp = grid.layout().pp, stage = grid.pp_rank();
  std::vector<int64_t> sizes = stage_layers;
  if (sizes.empty())
    for (int64_t s = 0; s < pp; ++s) sizes.push_back(num_layers / pp + (s < num_layers % pp));
  Shard shard;
  shard.tp = &grid.tp();
  for (int64_t s = 0; s < stage; ++s) shard.first_layer += sizes.at(s);
  shard.end_layer = shard.first_layer + sizes.at(stage);
  shard.embedding = grid.first_stage();
  shard.head = grid.last_stage();
  return shard;
}

std::pair<int64_t, int64_t> projection_shape(const LlamaArch& a, Proj p) {
  const int64_t H = a.hidden_size, q = a.num_heads * a.head_dim(),
                kv = a.num_kv_heads * a.head_dim(), I = a.intermediate_size;
  switch (p) {
    case Proj::q:
      return {q, H};
    case Proj::k:
    case Proj::v:
      return {kv, H};
    case Proj::o:
      return {H, q};
    case Proj::gate:
    case Proj::up:
      return {I, H};
    case Proj::down:
      return {H, I};
  }
  return {0, 0};
}

Llama load_llama(const std::string& folder, torch::TensorOptions options, const Shard& shard) {
  LlamaArch arch = read_hf_config(folder);
  WeightStore store(folder);
  Llama model(arch, options, shard);
  model->load(store);
  // The slices' temporaries under 32 MiB were freed into the heap (trainer/process.h keeps it):
  // hand them back, so that what stays resident is the shard (0.17 GB a rank of the 70B slice).
  malloc_trim(0);
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
