// Adapters after the blocks: Houlsby, Compacter, tiny-attention. Each starts at the base exactly,
// counts the parameters of its formula, has fp64 gradients equal to finite differences, and
// round-trips through its exported folder.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adapter.h"
#include "adapters/block.h"
#include "checkpoints/peft.h"
#include "common/error.h"
#include "model/llama.h"
#include "test_support.h"
#include "tests/test_paths.h"

using namespace spartan;

namespace {
const std::string kBase =
    spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";  // H 64, 2 layers

AdapterConfig block_config(const std::string& method) {
  AdapterConfig c;
  c.method = method;
  c.bottleneck.size = 8;
  c.compacter.n = 4;
  c.compacter.rank = 2;
  c.tiny_attention.heads = 4;
  c.tiny_attention.head_dim = 2;
  return c;
}

// Every parameter to random values, so no gradient is zero by construction (zero-initialised
// up-projections would hide the down-projections' gradients).
void randomise(const model::NamedTensors& params, double scale) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : params) t.copy_(torch::randn_like(t) * scale);
}

torch::Tensor ids() { return torch::randint(0, 101, {2, 12}, torch::kInt64); }
}  // namespace

TEST(BlockAdapters, StartAtTheBaseAndCountTheirFormulas) {
  const int64_t H = 64, L = 2, m = 8, n = 4, k = 2, heads = 4, d = 2;
  const std::map<std::string, int64_t> formula = {
      {"houlsby", L * 2 * (2 * H * m + m + H)},                      // down, up and biases, 2 sites
      {"compacter", L * 2 * (2 * k * (H + m) + m + H) + n * n * n},  // A_i once for all layers
      {"tiny_attention", L * 4 * H * heads * d}};                    // q, k, v, o
  torch::manual_seed(3);
  const auto x = ids();
  auto base = model::load_llama(kBase, torch::kFloat32);
  torch::NoGradGuard no_grad;
  const auto expected = base->forward(x);
  for (const auto& [method, count] : formula) {
    auto m_ = model::load_llama(kBase, torch::kFloat32);
    auto attached = adapters::attach(m_, block_config(method));
    EXPECT_EQ(attached.num_trainable(), count) << method;
    EXPECT_TRUE(torch::equal(m_->forward(x), expected)) << method << " changes the base at init";
  }
}

TEST(BlockAdapters, GradientsMatchFiniteDifferencesInFp64) {
  torch::manual_seed(4);
  const int64_t H = 8;
  const auto h = torch::randn({2, 5, H}, torch::kFloat64);
  const auto a = torch::randn({2, 5, H}, torch::kFloat64);
  const auto w = torch::randn({2, 5, H}, torch::kFloat64);  // loss = Σ w ⊙ f(h, a)
  std::vector<std::shared_ptr<model::BlockAdapter>> adapters = {
      std::make_shared<adapters::HoulsbyAdapter>(H, 3),
      std::make_shared<adapters::CompacterAdapter>(H, 4, 2, 2,
                                                   std::make_shared<adapters::PhmRule>(2), true),
      std::make_shared<adapters::TinyAttentionAdapter>(H, 2, 3)};
  for (auto& adapter : adapters) {
    adapter->to(torch::kFloat64);
    std::vector<torch::Tensor> params;
    model::NamedTensors named;
    for (const auto& p : adapter->named_parameters()) {
      params.push_back(p.value());
      named.emplace_back(p.key(), p.value());
    }
    randomise(named, 0.5);
    testing_support::expect_gradients_match_finite_differences(
        [&] { return (adapter->forward(h, a) * w).sum(); }, params, 1e-6);
  }
}

// Compacter's A_i are one tensor shared by every layer: its gradient sums over all of them.
TEST(BlockAdapters, CompacterSharesItsRuleOverLayers) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  adapters::attach(m, block_config("compacter"));
  int64_t rules = 0;
  for (const auto& [name, t] : adapters::trainable_parameters(m))
    rules += name.find("phm_rule") != std::string::npos;
  EXPECT_EQ(rules, 1);
  auto first = std::dynamic_pointer_cast<adapters::CompacterAdapter>(
      m->layer(0)->named_modules()["mlp_adapter"]);
  auto last = std::dynamic_pointer_cast<adapters::CompacterAdapter>(
      m->layer(1)->named_modules()["attention_adapter"]);
  ASSERT_TRUE(first && last);
  EXPECT_TRUE(first->rule->A.is_same(last->rule->A));
}

TEST(BlockAdapters, ExportRoundTrips) {
  torch::manual_seed(5);
  const auto x = ids();
  for (const std::string method : {"houlsby", "compacter", "tiny_attention"}) {
    auto m = model::load_llama(kBase, torch::kFloat32);
    adapters::attach(m, block_config(method));
    randomise(adapters::trainable_parameters(m), 0.1);
    torch::NoGradGuard no_grad;
    const auto adapted = m->forward(x);
    EXPECT_GT((adapted - model::load_llama(kBase, torch::kFloat32)->forward(x))
                  .abs()
                  .max()
                  .item<double>(),
              1e-4)
        << method << " does nothing";
    const std::string dir = ::testing::TempDir() + "spartan_block_" + method;
    checkpoints::save_block_adapter(dir, m, block_config(method), kBase);
    auto back = model::load_llama(kBase, torch::kFloat32);
    const AdapterConfig read = checkpoints::load_peft_adapter(dir, back);
    EXPECT_EQ(read.method, method);
    EXPECT_TRUE(torch::equal(back->forward(x), adapted)) << method;
  }
}

TEST(BlockAdapters, CompacterNeedsNDividingTheSizes) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig c = block_config("compacter");
  c.compacter.n = 3;
  EXPECT_THROW(adapters::attach(m, c), UsageError);
}
