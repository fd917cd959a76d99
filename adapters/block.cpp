#include "adapters/block.h"

#include <cmath>
#include <limits>

#include "common/error.h"

namespace spartan::adapters {

HoulsbyAdapter::HoulsbyAdapter(int64_t hidden, int64_t bottleneck) {
  down_weight = register_parameter("down_weight", torch::randn({bottleneck, hidden}) * 0.01);
  down_bias = register_parameter("down_bias", torch::zeros({bottleneck}));
  up_weight = register_parameter("up_weight", torch::zeros({hidden, bottleneck}));
  up_bias = register_parameter("up_bias", torch::zeros({hidden}));
}

torch::Tensor HoulsbyAdapter::forward(const torch::Tensor&, const torch::Tensor& a) {
  const auto x = a.to(up_bias.scalar_type());
  const auto f =
      torch::linear(torch::relu(torch::linear(x, down_weight, down_bias)), up_weight, up_bias);
  return a + f.to(a.scalar_type());
}

PhmRule::PhmRule(int64_t n) { A = register_parameter("A", torch::randn({n, n, n}) * 0.01); }

torch::Tensor PhmWeights::weight(const torch::Tensor& A) const {
  const auto B = torch::bmm(s, t);  // (n, in/n, out/n)
  const int64_t n = A.size(0);
  // kron(A_i, B_i)[j·P + p, k·Q + q] = A_i[j, k]·B_i[p, q], summed over i.
  return torch::einsum("ijk,ipq->jpkq", {A.to(B.scalar_type()), B})  // B: bf16 under autocast
      .reshape({n * B.size(1), n * B.size(2)});
}

namespace {
PhmWeights phm_layer(torch::nn::Module& owner, const std::string& name, int64_t in, int64_t out,
                     int64_t n, int64_t rank, bool zero) {
  PhmWeights w;
  auto s = torch::empty({n, in / n, rank}), t = torch::empty({n, rank, out / n});
  for (int64_t i = 0; i < n; ++i) {
    torch::nn::init::xavier_normal_(s[i]);
    torch::nn::init::xavier_normal_(t[i]);
  }
  if (zero) t.zero_();
  w.s = owner.register_parameter(name + "_s", s);
  w.t = owner.register_parameter(name + "_t", t);
  w.b = owner.register_parameter(name + "_bias", torch::zeros({out}));
  return w;
}
}  // namespace

CompacterAdapter::CompacterAdapter(int64_t hidden, int64_t bottleneck, int64_t n, int64_t rank,
                                   std::shared_ptr<PhmRule> rule_, bool owns_rule)
    : rule(std::move(rule_)) {
  TORCH_CHECK(hidden % n == 0 && bottleneck % n == 0, "Compacter: n must divide both sizes");
  torch::NoGradGuard no_grad;
  down = phm_layer(*this, "down", hidden, bottleneck, n, rank, false);
  up = phm_layer(*this, "up", bottleneck, hidden, n, rank, true);
  if (owns_rule) register_module("phm_rule", rule);
}

torch::Tensor CompacterAdapter::forward(const torch::Tensor&, const torch::Tensor& a) {
  const auto x = a.to(up.b.scalar_type());
  const auto d = torch::gelu(torch::matmul(x, down.weight(rule->A)) + down.b);
  const auto f = torch::matmul(d, up.weight(rule->A)) + up.b;
  return a + f.to(a.scalar_type());
}

TinyAttentionAdapter::TinyAttentionAdapter(int64_t hidden, int64_t heads_, int64_t head_dim_)
    : heads(heads_), head_dim(head_dim_) {
  qkv_weight =
      register_parameter("qkv_weight", torch::randn({3 * heads * head_dim, hidden}) * 0.02);
  o_weight = register_parameter("o_weight", torch::zeros({hidden, heads * head_dim}));
}

torch::Tensor TinyAttentionAdapter::forward(const torch::Tensor& h, const torch::Tensor& a) {
  const int64_t B = h.size(0), T = h.size(1);
  const auto qkv = torch::linear(h.to(qkv_weight.scalar_type()), qkv_weight)
                       .view({B, T, 3, heads, head_dim})
                       .permute({2, 0, 3, 1, 4});  // (3, B, heads, T, d)
  auto scores =
      torch::matmul(qkv[0], qkv[1].transpose(2, 3)) / std::sqrt(static_cast<double>(head_dim));
  const auto future = torch::ones({T, T}, torch::dtype(torch::kBool).device(h.device())).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  const auto out = torch::matmul(torch::softmax(scores, -1), qkv[2]);  // (B, heads, T, d)
  const auto f = torch::linear(out.transpose(1, 2).reshape({B, T, heads * head_dim}), o_weight);
  return a + f.to(a.scalar_type());
}

namespace {
int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}
}  // namespace

void BlockMethod::attach(model::Llama& model, const AdapterConfig& c) const {
  model->set_base_trainable(false);
  check(model, c);
  std::shared_ptr<torch::nn::Module> shared;
  for (int64_t l = 0; l < model->num_layers(); ++l) {
    auto [after_attention, after_mlp] = make_layer(l, model->arch().hidden_size, c, shared);
    if (l < model->first_layer() || l >= model->end_layer()) continue;
    model->layer(l)->attach_after_attention(after_attention);
    model->layer(l)->attach_after_mlp(after_mlp);
  }
}

const PeftRef* HoulsbyMethod::peft_ref() const {
  static const PeftRef row{"dense bottleneck",    "none",       "addition",
                           "hidden states",       "sequential", "direct addition",
                           "after attention, FFN"};
  return &row;
}

BlockMethod::Pair HoulsbyMethod::make_layer(int64_t, int64_t H, const AdapterConfig& c,
                                            std::shared_ptr<torch::nn::Module>&) const {
  return {std::make_shared<HoulsbyAdapter>(H, c.bottleneck.size),
          std::make_shared<HoulsbyAdapter>(H, c.bottleneck.size)};
}

ParameterCount HoulsbyMethod::count(const model::LlamaArch& a, const AdapterConfig& c) const {
  const int64_t H = a.hidden_size, m = c.bottleneck.size, L = a.num_layers;
  torch::NoGradGuard no_grad;
  ParameterCount n;
  n.per_layer = 2 * count_parameters(HoulsbyAdapter(H, m));
  n.formula_value = L * 2 * (2 * H * m + H + m);
  n.formula = "L·2(2Hm + H + m)";
  n.insertions = 2 * L;
  return n;
}

const PeftRef* CompacterMethod::peft_ref() const {
  static const PeftRef row{"Kronecker (PHM) bottleneck",
                           "A_i shared",
                           "addition",
                           "hidden states",
                           "sequential",
                           "direct addition",
                           "after attention, FFN"};
  return &row;
}

void CompacterMethod::check(const model::Llama& model, const AdapterConfig& c) const {
  const int64_t H = model->arch().hidden_size, m = c.bottleneck.size, n = c.compacter.n;
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
}

BlockMethod::Pair CompacterMethod::make_layer(int64_t l, int64_t H, const AdapterConfig& c,
                                              std::shared_ptr<torch::nn::Module>& shared) const {
  if (!shared) shared = std::make_shared<PhmRule>(c.compacter.n);
  auto rule = std::static_pointer_cast<PhmRule>(shared);  // made just above, for this method
  const int64_t m = c.bottleneck.size, n = c.compacter.n, k = c.compacter.rank;
  return {std::make_shared<CompacterAdapter>(H, m, n, k, rule, l == 0),
          std::make_shared<CompacterAdapter>(H, m, n, k, rule, false)};
}

ParameterCount CompacterMethod::count(const model::LlamaArch& a, const AdapterConfig& c) const {
  const int64_t H = a.hidden_size, m = c.bottleneck.size, n = c.compacter.n;
  const int64_t k = c.compacter.rank, L = a.num_layers;
  ParameterCount count;
  if (H % n != 0 || m % n != 0) return count;
  torch::NoGradGuard no_grad;
  auto rule = std::make_shared<PhmRule>(n);
  count.per_layer = 2 * count_parameters(CompacterAdapter(H, m, n, k, rule, false));
  count.shared = count_parameters(*rule);
  count.formula_value = L * 2 * (2 * k * (H + m) + H + m) + n * n * n;
  count.formula = "L·2(2k(H + m) + H + m) + n³";
  count.insertions = 2 * L;
  return count;
}

const PeftRef* TinyAttentionMethod::peft_ref() const {
  static const PeftRef row{"dense, attention", "none",     "addition",
                           "hidden states",    "parallel", "direct addition",
                           "attention layer"};
  return &row;
}

BlockMethod::Pair TinyAttentionMethod::make_layer(int64_t, int64_t H, const AdapterConfig& c,
                                                  std::shared_ptr<torch::nn::Module>&) const {
  return {
      std::make_shared<TinyAttentionAdapter>(H, c.tiny_attention.heads, c.tiny_attention.head_dim),
      nullptr};
}

ParameterCount TinyAttentionMethod::count(const model::LlamaArch& a, const AdapterConfig& c) const {
  const int64_t H = a.hidden_size, heads = c.tiny_attention.heads;
  const int64_t d = c.tiny_attention.head_dim, L = a.num_layers;
  torch::NoGradGuard no_grad;
  ParameterCount n;
  n.per_layer = count_parameters(TinyAttentionAdapter(H, heads, d));
  n.formula_value = L * 4 * H * heads * d;
  n.formula = "L·4H·heads·d_head";
  n.insertions = L;
  return n;
}

}  // namespace spartan::adapters
