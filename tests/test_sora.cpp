// SoRA: starts at the base, gradients match finite differences (fp64), the proximal step equals
// its closed form on hand-made numbers, training with λ > 0 reaches exact zeros, and removing the
// zero-gated ranks leaves the output unchanged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adapter.h"
#include "adapters/sora.h"
#include "checkpoints/peft.h"
#include "data/dataset.h"
#include "model/llama.h"
#include "test_support.h"
#include "tests/test_paths.h"
#include "trainer/sora_gates.h"
#include "trainer/trainer.h"

using namespace spartan;

namespace {
const std::string kBase = spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";
torch::Tensor ids() { return torch::tensor({{5, 10, 20, 40, 80, 60, 30, 15}}); }
}  // namespace

TEST(SoraProximal, OfficialThreeLinesOnHandMadeNumbers) {
  // ξ = 0.3: |g| < 0.6 ends at 0; larger entries shrink by 0.3 toward zero.
  // (The textbook soft threshold would keep 0.5 as 0.2 and 0.59 as 0.29.)
  auto g = torch::tensor({1.0, 0.5, 0.29, 0.0, -0.31, -0.7, 0.59, 0.61}, torch::kFloat64);
  trainer::threshold_gates(g, 0.3, 1.0, GateThreshold::official);
  auto want = torch::tensor({0.7, 0.0, 0.0, 0.0, 0.0, -0.4, 0.0, 0.31}, torch::kFloat64);
  EXPECT_TRUE(torch::allclose(g, want, 0, 1e-12)) << g;
}

TEST(SoraProximal, SoftAndLrScaled) {
  auto g = torch::tensor({1.0, 0.5, 0.29, -0.31, -0.7}, torch::kFloat64);
  auto soft = g.clone();
  trainer::threshold_gates(soft, 0.3, 1.0, GateThreshold::soft);
  EXPECT_TRUE(
      torch::allclose(soft, torch::tensor({0.7, 0.2, 0.0, -0.01, -0.4}, torch::kFloat64), 0, 1e-12))
      << soft;
  auto scaled = g.clone();
  trainer::threshold_gates(scaled, 0.3, 0.5, GateThreshold::lr_scaled);  // ξ·lr = 0.15
  EXPECT_TRUE(torch::allclose(
      scaled, torch::tensor({0.85, 0.35, 0.14, -0.16, -0.55}, torch::kFloat64), 0, 1e-12))
      << scaled;
}

TEST(Sora, StartsAtTheBaseAndCountsParameters) {
  auto base = model::load_llama(kBase, torch::kFloat32);
  auto m = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig c;
  c.method = "sora";
  c.r = 4;
  auto attached = adapters::attach(m, c);
  // r(in + out) + r per projection.
  EXPECT_EQ(attached.num_trainable(), 2 * (4 * (128 + 96 + 96 + 128 + 240 * 3) + 7 * 4));
  m->eval();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(base->forward(ids()), m->forward(ids())));
}

TEST(Sora, GradientsMatchFiniteDifferencesInFp64) {
  torch::manual_seed(3);
  adapters::SoraLinear s(5, 4, 3, 6.0, 0.0);
  s.to(torch::kFloat64);
  {
    torch::NoGradGuard no_grad;
    s.lora_B.normal_();
  }
  auto W = torch::randn({4, 5}, torch::kFloat64);
  auto x = torch::randn({2, 5}, torch::kFloat64);
  auto t = torch::randn({2, 4}, torch::kFloat64);
  testing_support::expect_gradients_match_finite_differences(
      [&] { return (s.forward(x, W) - t).pow(2).sum(); }, {s.lora_A, s.lora_B, s.gate});
}

// Training with a large ξ switches ranks off (exact zeros); the LoRA of the remaining ranks gives
// the same outputs as the SoRA model.
TEST(Sora, GatesReachExactZerosAndRankRemovalKeepsTheOutput) {
  data::Sequences rows;
  rows.seq_len = 8;
  for (int64_t i = 0; i < 8 * 8; ++i) {
    rows.ids.push_back((i * 29) % 101);
    rows.labels.push_back(rows.ids.back());
  }
  data::Sequences none;
  torch::manual_seed(7);
  auto m = model::load_llama(kBase, torch::kFloat32);
  Config c;
  c.adapter.method = "sora";
  c.adapter.r = 8;
  c.adapter.dropout = 0.0;
  c.adapter.sora.lambda2 = 0.3;
  c.adapter.sora.lambda1 = 1.0;
  c.optim.lr = 1e-2;
  c.optim.global_batch_size = 8;
  c.optim.max_steps = 6;
  c.run.log_every = 100;
  adapters::attach(m, c.adapter);
  trainer::Trainer t(c, m, rows, none, testing::TempDir());
  t.run();
  int64_t zeros = 0, total = 0;
  for (const auto& [name, p] : adapters::trainable_parameters(m))
    if (adapters::is_sora_gate(name)) {
      zeros += p.eq(0).sum().item<int64_t>();
      total += p.numel();
    }
  EXPECT_GT(zeros, 0);
  EXPECT_LT(zeros, total);
  m->eval();
  torch::NoGradGuard no_grad;
  auto before = m->forward(ids());
  const int64_t kept = adapters::compact_adapters(m).kept;
  EXPECT_EQ(kept, total - zeros);
  EXPECT_LE((m->forward(ids()) - before).abs().max().item<double>(), 1e-5);
  // Exported in the PEFT layout with per-module ranks (rank_pattern), it reads back the same.
  const std::string dir = testing::TempDir() + "spartan_sora_export";
  checkpoints::save_peft_lora(dir, m, c.adapter, kBase);
  auto back = model::load_llama(kBase, torch::kFloat32);
  checkpoints::load_peft_lora(dir, back);
  back->eval();
  EXPECT_LE((back->forward(ids()) - before).abs().max().item<double>(), 1e-5);
}
