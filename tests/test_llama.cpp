// The LLaMA model without a reference framework: hook points, save/load, tying, dtypes.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "model/llama.h"

using namespace spartan::model;

namespace {

LlamaArch tiny_arch(bool tied = false) {
  LlamaArch a;
  a.vocab_size = 50;
  a.hidden_size = 32;
  a.intermediate_size = 40;
  a.num_layers = 2;
  a.num_heads = 4;
  a.num_kv_heads = 2;
  a.max_position_embeddings = 32;
  a.initializer_range = 0.2;
  a.tie_word_embeddings = tied;
  return a;
}

Llama tiny_model(bool tied = false, uint64_t seed = 7) {
  torch::manual_seed(seed);
  Llama m(tiny_arch(tied), torch::kFloat32);
  m->init_weights();
  return m;
}

std::string temp_dir(const std::string& name) {
  std::string d = testing::TempDir() + "spartan_llama_" + name;
  ::mkdir(d.c_str(), 0755);
  return d;
}

torch::Tensor ids() { return torch::tensor({{1, 5, 9, 2, 33, 47, 8}, {0, 3, 3, 49, 12, 6, 7}}); }

// A LinearAdapter that computes the projection with a scaled weight.
struct ScaledWeight : LinearAdapter {
  double scale;
  explicit ScaledWeight(double s) : scale(s) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& w) override {
    return torch::linear(x, w * scale);
  }
};

// A BlockAdapter that replaces the block's output by zeros.
struct ZeroBlock : BlockAdapter {
  torch::Tensor forward(const torch::Tensor&, const torch::Tensor& out) override {
    return torch::zeros_like(out);
  }
};

// Prompt tuning stand-in: prepends fixed embedding vectors.
struct Prepend : EmbeddingAdapter {
  torch::Tensor prompt;  // (P, H)
  explicit Prepend(torch::Tensor p) : prompt(std::move(p)) {}
  int64_t num_virtual_tokens() const override { return prompt.size(0); }
  torch::Tensor forward(const torch::Tensor& e) override {
    return torch::cat({prompt.unsqueeze(0).expand({e.size(0), -1, -1}), e}, 1);
  }
};

}  // namespace

TEST(Llama, ParameterNamesAndCountMatchHuggingFace) {
  auto m = tiny_model();
  auto params = m->base_parameters();
  int64_t n = 0;
  for (auto& [name, t] : params) n += t.numel();
  EXPECT_EQ(n, m->arch().num_parameters());
  EXPECT_EQ(params.front().first, "model.embed_tokens.weight");
  EXPECT_EQ(params.back().first, "lm_head.weight");
  bool found = false;
  for (auto& [name, t] : params) found |= name == "model.layers.1.mlp.down_proj.weight";
  EXPECT_TRUE(found);
  for (auto& [name, t] : params) EXPECT_FALSE(t.requires_grad()) << name;
}

TEST(Llama, LinearHookReplacesTheProjection) {
  auto a = tiny_model(), b = tiny_model();
  torch::NoGradGuard no_grad;
  b->projection(1, Proj::gate)->weight.mul_(3.0);
  a->projection(1, Proj::gate)->attach(std::make_shared<ScaledWeight>(3.0));
  auto la = a->forward(ids()), lb = b->forward(ids());
  EXPECT_LE((la - lb).abs().max().item<double>(), 1e-5);
  a->projection(1, Proj::gate)->detach();
  EXPECT_GT((a->forward(ids()) - lb).abs().max().item<double>(), 1e-3);
}

TEST(Llama, BlockHookSeesTheBlockBeforeTheResidual) {
  auto a = tiny_model(), b = tiny_model();
  torch::NoGradGuard no_grad;
  b->projection(0, Proj::o)->weight.zero_();  // attention output of layer 0 is then zero
  a->layer(0)->attach_after_attention(std::make_shared<ZeroBlock>());
  EXPECT_LE((a->forward(ids()) - b->forward(ids())).abs().max().item<double>(), 1e-6);
  b->projection(1, Proj::down)->weight.zero_();
  a->layer(1)->attach_after_mlp(std::make_shared<ZeroBlock>());
  EXPECT_LE((a->forward(ids()) - b->forward(ids())).abs().max().item<double>(), 1e-6);
  // Adapter parameters (none here) would be registered under the layer.
  a->layer(0)->attach_after_attention(nullptr);
  EXPECT_GT((a->forward(ids()) - b->forward(ids())).abs().max().item<double>(), 1e-4);
}

TEST(Llama, EmbeddingHookPrependsVirtualTokens) {
  auto m = tiny_model();
  torch::NoGradGuard no_grad;
  auto full = torch::tensor({{4, 8, 15, 16, 23, 42, 1, 2}});
  auto prefix = full.slice(1, 0, 3), rest = full.slice(1, 3, 8);
  auto reference = m->forward(full).slice(1, 3, 8);
  m->attach_embedding(std::make_shared<Prepend>(torch::embedding(m->embed_weight(), prefix[0])));
  auto logits = m->forward(rest);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, 5, 50}));
  EXPECT_LE((logits - reference).abs().max().item<double>(), 1e-5);
}

TEST(Llama, AdapterParametersAreRegisteredUnderTheProjection) {
  struct WithParam : LinearAdapter {
    torch::Tensor scale;
    WithParam() { scale = register_parameter("scale", torch::ones({1})); }
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& w) override {
      return torch::linear(x, w) * scale;
    }
  };
  auto m = tiny_model();
  m->projection(0, Proj::v)->attach(std::make_shared<WithParam>());
  auto params = m->named_parameters();
  ASSERT_TRUE(params.contains("model.layers.0.self_attn.v_proj.adapter.scale"));
  EXPECT_EQ(m->base_parameters().size(), 2u * 9 + 3);  // adapters are not base parameters
  auto loss = causal_lm_loss(m->forward(ids()), ids());
  loss.backward();
  EXPECT_TRUE(params["model.layers.0.self_attn.v_proj.adapter.scale"].grad().defined());
  EXPECT_FALSE(m->projection(0, Proj::v)->weight.grad().defined());  // frozen base
}

TEST(Llama, FullFineTuningMakesTheBaseTrainable) {
  auto m = tiny_model();
  m->set_base_trainable(true);
  causal_lm_loss(m->forward(ids()), ids()).backward();
  for (auto& [name, t] : m->base_parameters()) {
    ASSERT_TRUE(t.grad().defined()) << name;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0.0) << name;
  }
}

TEST(Llama, SaveAndLoadGiveTheSameModel) {
  for (bool tied : {false, true}) {
    auto m = tiny_model(tied);
    std::string dir = temp_dir(tied ? "tied" : "untied");
    m->save(dir, /*max_shard_bytes=*/8000);  // several shards with an index
    auto back = load_llama(dir, torch::kFloat32);
    EXPECT_EQ(back->arch().tie_word_embeddings, tied);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(m->forward(ids()), back->forward(ids())));
  }
}

TEST(Llama, TiedHeadIsTheEmbedding) {
  auto m = tiny_model(/*tied=*/true);
  EXPECT_EQ(m->lm_head_weight().data_ptr(), m->embed_weight().data_ptr());
  EXPECT_EQ(m->base_parameters().back().first, "model.norm.weight");
}

TEST(Llama, LoadRejectsAShapeMismatchNamingTheTensor) {
  auto m = tiny_model();
  std::string dir = temp_dir("mismatch");
  m->save(dir);
  LlamaArch other = tiny_arch();
  other.intermediate_size = 48;
  Llama wrong(other, torch::kFloat32);
  try {
    wrong->load(WeightStore(dir));
    FAIL();
  } catch (const spartan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.gate_proj.weight' has shape [40, 32], "
                                         "config.json implies [48, 32]"),
              std::string::npos)
        << e.what();
  }
}

TEST(Llama, LoadRejectsNonFiniteWeightsNamingTheTensor) {
  for (double poison : {std::nan(""), std::numeric_limits<double>::infinity()}) {
    auto m = tiny_model();
    {
      torch::NoGradGuard no_grad;
      m->projection(1, Proj::up)->weight[3][5] = poison;
    }
    std::string dir = temp_dir("nonfinite");
    m->save(dir);
    try {
      load_llama(dir, torch::kFloat32);
      FAIL() << "a base with " << poison << " was loaded";
    } catch (const spartan::Error& e) {
      EXPECT_NE(std::string(e.what()).find("'model.layers.1.mlp.up_proj.weight' holds NaN or Inf"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Llama, InitialLossIsNearLnVocab) {
  torch::manual_seed(1);
  LlamaArch a = tiny_arch();
  a.initializer_range = 0.02;
  Llama m(a, torch::kFloat32);
  m->init_weights();
  torch::NoGradGuard no_grad;
  auto x = torch::randint(a.vocab_size, {4, 16}, torch::kInt64);
  EXPECT_NEAR(causal_lm_loss(m->forward(x), x).item<double>(), std::log(50.0), 0.05);
}

TEST(Llama, LossIgnoresMaskedLabels) {
  auto logits = torch::randn({1, 4, 6});
  auto labels = torch::tensor({{2, -100, 3, -100}});
  auto per_token = token_losses(logits, labels);  // predicts positions 1..3
  EXPECT_EQ(per_token[0][0].item<double>(), 0.0);
  EXPECT_EQ(per_token[0][2].item<double>(), 0.0);
  auto expected = -torch::log_softmax(logits[0][1], 0)[3];
  EXPECT_NEAR(causal_lm_loss(logits, labels).item<double>(), expected.item<double>(), 1e-6);
}

TEST(Llama, RotaryTablesMatchTheClosedForm) {
  LlamaArch a = tiny_arch();  // head_dim 8
  Rotary r = rotary_tables(a, 5, torch::kFloat32, torch::kCPU);
  // position 3, frequency index 1: angle = 3 / 10000^(2/8)
  double angle = 3.0 / std::pow(10000.0, 2.0 / 8.0);
  EXPECT_NEAR(r.cos[3][1].item<double>(), std::cos(angle), 1e-6);
  EXPECT_NEAR(r.sin[3][5].item<double>(), std::sin(angle), 1e-6);  // second half repeats
  a.rope_scaling_factor = 2.0;
  Rotary s = rotary_tables(a, 7, torch::kFloat32, torch::kCPU);
  EXPECT_NEAR(s.cos[6][1].item<double>(), std::cos(angle), 1e-6);  // position 6 / 2 = 3
}

// Attention through at::scaled_dot_product_attention against the explicit scores, mask and
// softmax it replaced: grouped-query heads, keys in front of the sequence (prefix tuning, a KV
// cache) and one query over a cache; values and gradients within 1e-5 in fp32, 1e-2 in bf16
// (relative to the largest entry where that is above 1: bf16 keeps 8 bits).
TEST(Attention, KernelEqualsTheExplicitAttention) {
  torch::manual_seed(21);
  struct Case {
    int64_t nh, nkv, T, S;
  };
  for (const Case c : {Case{8, 8, 12, 12}, Case{8, 2, 12, 12}, Case{8, 2, 12, 15},
                       Case{4, 4, 1, 10}, Case{4, 1, 5, 9}})
    for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      const double tol = dtype == torch::kFloat32 ? 1e-5 : 1e-2;
      auto q = torch::randn({2, c.nh, c.T, 16}).to(dtype).requires_grad_();
      auto k = torch::randn({2, c.nkv, c.S, 16}).to(dtype).requires_grad_();
      auto v = torch::randn({2, c.nkv, c.S, 16}).to(dtype).requires_grad_();
      const auto dy = torch::randn({2, c.nh, c.T, 16}).to(dtype);
      auto run = [&](bool reference) {
        auto y = reference ? causal_attention_reference(q, k, v) : causal_attention_kernel(q, k, v);
        auto grads = torch::autograd::grad({y}, {q, k, v}, {dy});
        return std::vector<torch::Tensor>{y, grads[0], grads[1], grads[2]};
      };
      const auto want = run(true), got = run(false);
      const char* what[] = {"output", "dq", "dk", "dv"};
      for (int i = 0; i < 4; ++i) {
        const auto w = want[i].to(torch::kFloat32);
        const double err = (got[i].to(torch::kFloat32) - w).abs().max().item<double>() /
                           std::max(1.0, w.abs().max().item<double>());
        EXPECT_LT(err, tol) << what[i] << " of heads " << c.nh << "/" << c.nkv << ", T " << c.T
                            << ", S " << c.S << ", " << c10::toString(dtype);
      }
    }
}

// On a GPU, the flash or memory-efficient kernels against the explicit attention on the CPU.
TEST(AttentionGpu, KernelEqualsTheExplicitAttentionOnTheCpu) {
  if (!torch::cuda::is_available() || torch::cuda::device_count() == 0)
    GTEST_SKIP() << "no CUDA device visible: nothing to compare";
  torch::manual_seed(22);
  for (const int64_t S : {256, 260}) {  // causal, and with 4 prefix keys (an explicit mask)
    auto q = torch::randn({2, 8, 256, 64}).requires_grad_();
    auto k = torch::randn({2, 2, S, 64}).requires_grad_();
    auto v = torch::randn({2, 2, S, 64}).requires_grad_();
    const auto dy = torch::randn({2, 8, 256, 64});
    const auto want = causal_attention_reference(q, k, v);
    const auto want_grads = torch::autograd::grad({want}, {q, k, v}, {dy});
    for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      const double tol = dtype == torch::kFloat32 ? 2e-3 : 3e-2;  // TF32 where torch allows it
      auto qc = q.detach().to(torch::kCUDA, dtype).requires_grad_();
      auto kc = k.detach().to(torch::kCUDA, dtype).requires_grad_();
      auto vc = v.detach().to(torch::kCUDA, dtype).requires_grad_();
      const auto got = causal_attention(qc, kc, vc);
      const auto grads = torch::autograd::grad({got}, {qc, kc, vc}, {dy.to(torch::kCUDA, dtype)});
      auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
        return (a.cpu().to(torch::kFloat32) - b).abs().max().item<double>() /
               std::max(1.0, b.abs().max().item<double>());
      };
      EXPECT_LT(rel(got, want), tol) << "output, S " << S << ", " << c10::toString(dtype);
      for (int i = 0; i < 3; ++i)
        EXPECT_LT(rel(grads[i], want_grads[i]), tol) << "gradient " << i << ", S " << S;
    }
  }
}
