// SPP: starts at the pruned model, both forms equal, gradients match finite differences (fp64),
// parameter count, merge equivalence, and the zero pattern kept bit for bit through training
// and merge on unstructured 50% and 2:4 bases. Also LoRA's merges (dense and LoRA*).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adapter.h"
#include "adapters/lora.h"
#include "adapters/spp.h"
#include "data/dataset.h"
#include "model/llama.h"
#include "prune/masks.h"
#include "test_support.h"
#include "tests/test_paths.h"
#include "trainer/trainer.h"

using namespace spartan;

namespace {
const std::string kBase = spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";

torch::Tensor ids() {
  return torch::tensor({{3, 14, 15, 92, 65, 35, 89, 79}, {2, 71, 82, 8, 1, 8, 28, 18}});
}

// The base, pruned with magnitude at `pattern` on every projection.
model::Llama pruned_base(const std::string& pattern) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto p = prune::parse_pattern(pattern);
  for (int64_t l = 0; l < m->num_layers(); ++l)
    for (model::Proj proj : model::kAllProjections) {
      auto& W = m->projection(l, proj)->weight;
      W.masked_fill_(prune::magnitude_mask(W, 0.5, p), 0.0);
    }
  return m;
}

std::vector<torch::Tensor> zero_patterns(model::Llama& m) {
  std::vector<torch::Tensor> out;
  for (int64_t l = 0; l < m->num_layers(); ++l)
    for (model::Proj p : model::kAllProjections)
      out.push_back(m->projection(l, p)->weight.eq(0).clone());
  return out;
}

AdapterConfig spp_config(const std::string& form) {
  AdapterConfig c;
  c.method = "spp";
  c.r = 4;
  c.alpha = 8;
  c.dropout = 0.0;
  c.spp.form = *option_named<SppForm>(form);
  return c;
}

void randomize(model::Llama& m) {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : adapters::trainable_parameters(m)) t.normal_(0, 0.3);
}
}  // namespace

TEST(Spp, StartsExactlyAtThePrunedModelAndCountsParameters) {
  auto base = pruned_base("2:4");
  auto m = pruned_base("2:4");
  auto attached = adapters::attach(m, spp_config("effective"));
  // r·n + m per projection: q 4·64+64, k 4·64+32, v 4·64+32, o 4·64+64, gate/up 4·64+176,
  // down 4·176+64; two layers.
  EXPECT_EQ(attached.num_trainable(),
            2 * ((256 + 64) + (256 + 32) * 2 + (256 + 64) + (256 + 176) * 2 + (704 + 64)));
  torch::NoGradGuard no_grad;
  m->eval();
  EXPECT_TRUE(torch::equal(base->forward(ids()), m->forward(ids())));
}

TEST(Spp, EffectiveAndBlockedFormsAgree) {
  torch::manual_seed(1);
  adapters::SppLinear eff(32, 24, 4, 8.0, 0.0, SppForm::effective);
  adapters::SppLinear blk(32, 24, 4, 8.0, 0.0, SppForm::blocked);
  torch::NoGradGuard no_grad;
  eff.beta_w.normal_();
  blk.alpha_w.copy_(eff.alpha_w);
  blk.beta_w.copy_(eff.beta_w);
  auto W = torch::randn({24, 32}).masked_fill(torch::rand({24, 32}).lt(0.5), 0.0);
  auto x = torch::randn({2, 5, 32});
  EXPECT_LE((eff.forward(x, W) - blk.forward(x, W)).abs().max().item<double>(), 1e-5);
  // Both equal the definition: x·W̃ᵀ + s·x·(W̃ ⊙ R(W_α) ⊙ W_β)ᵀ.
  auto R = eff.alpha_w.repeat_interleave(6, 0);
  auto reference = torch::linear(x, W) + 2.0 * torch::linear(x, W * R * eff.beta_w);
  EXPECT_LE((eff.forward(x, W) - reference).abs().max().item<double>(), 1e-5);
}

TEST(Spp, GradientsMatchFiniteDifferencesInFp64) {
  for (const char* form : {"effective", "blocked"}) {
    torch::manual_seed(2);
    adapters::SppLinear spp(6, 4, 2, 4.0, 0.0, *option_named<SppForm>(form));
    spp.to(torch::kFloat64);
    {
      torch::NoGradGuard no_grad;
      spp.beta_w.normal_();
    }
    auto W = torch::randn({4, 6}, torch::kFloat64).masked_fill(torch::rand({4, 6}).lt(0.4), 0.0);
    auto x = torch::randn({3, 6}, torch::kFloat64);
    auto target = torch::randn({3, 4}, torch::kFloat64);
    SCOPED_TRACE(form);
    testing_support::expect_gradients_match_finite_differences(
        [&] { return (spp.forward(x, W) - target).pow(2).sum(); }, {spp.alpha_w, spp.beta_w});
  }
}

TEST(Spp, MergedModelEqualsTheAdaptedModel) {
  for (const char* form : {"effective", "blocked"}) {
    auto m = pruned_base("unstructured");
    adapters::attach(m, spp_config(form));
    randomize(m);
    m->eval();
    torch::NoGradGuard no_grad;
    auto adapted = m->forward(ids());
    adapters::merge_into_base(m, MergeForm::dense);
    EXPECT_TRUE(adapters::trainable_parameters(m).empty());
    EXPECT_LE((m->forward(ids()) - adapted).abs().max().item<double>(), 1e-4) << form;
  }
}

// The zero pattern of every targeted weight: identical before training, after 5 steps and after
// merge, bit for bit, on unstructured 50% and 2:4 bases.
TEST(Spp, ZeroPatternSurvivesTrainingAndMerge) {
  data::Sequences rows;
  rows.seq_len = 8;
  for (int64_t i = 0; i < 8 * 8; ++i) {
    rows.ids.push_back((i * 37) % 101);
    rows.labels.push_back(rows.ids.back());
  }
  data::Sequences none;
  for (const char* pattern : {"unstructured", "2:4"}) {
    auto m = pruned_base(pattern);
    const auto before = zero_patterns(m);
    Config c;
    c.adapter = spp_config("effective");
    c.adapter.dropout = 0.05;
    c.optim.lr = 1e-2;
    c.optim.schedule = LrScheduleKind::constant;
    c.optim.global_batch_size = 8;  // every step sees all rows: the loss must fall
    c.optim.max_steps = 5;
    c.run.log_every = 100;
    adapters::attach(m, c.adapter);
    std::vector<double> losses;
    trainer::Trainer t(c, m, rows, none, testing::TempDir());
    t.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
    t.run();
    EXPECT_LT(losses.back(), losses.front()) << pattern;  // it trained
    auto after_training = zero_patterns(m);               // base frozen: still the same tensors
    adapters::merge_into_base(m, MergeForm::dense);
    auto after_merge = zero_patterns(m);
    for (size_t i = 0; i < before.size(); ++i) {
      EXPECT_TRUE(torch::equal(before[i], after_training[i])) << pattern << " " << i;
      EXPECT_TRUE(torch::equal(before[i], after_merge[i])) << pattern << " " << i;
    }
    // And the merge did change the kept weights.
    auto dense = pruned_base(pattern);
    EXPECT_FALSE(torch::equal(dense->projection(0, model::Proj::q)->weight,
                              m->projection(0, model::Proj::q)->weight));
  }
}

// SPP's factor 1 + s·R(W_α)·W_β can be exactly 0 (scripts/study met one at learning rate 0.256):
// the kept weights it multiplies become exactly 0 in the adapted and the merged model alike.
// Every base zero is still kept; the check counts the new zeros as gained, none as lost.
TEST(Spp, AFactorOfZeroGainsZerosAndLosesNone) {
  auto m = pruned_base("2:4");
  const auto before = zero_patterns(m);
  adapters::attach(m, spp_config("effective"));  // s = alpha / r = 2
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : adapters::trainable_parameters(m))
    t.fill_(name.find("spp_alpha") != std::string::npos ? -0.5 : 1.0);  // 1 + 2·(-0.5)·1 = 0
  const auto changes = adapters::zero_pattern_changes(m);
  EXPECT_EQ(changes.lost, 0);
  EXPECT_GT(changes.gained, 0);
  adapters::merge_into_base(m, MergeForm::dense);
  const auto after = zero_patterns(m);
  for (size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(torch::equal(before[i] & after[i], before[i])) << i;  // every base zero stays
}

TEST(LoraMerge, DenseEqualsAdaptedAndMaskedKeepsZeros) {
  auto m = pruned_base("2:4");
  AdapterConfig c;
  c.dropout = 0.0;
  adapters::attach(m, c);
  randomize(m);
  m->eval();
  torch::NoGradGuard no_grad;
  auto adapted = m->forward(ids());
  const auto zeros = zero_patterns(m);
  auto dense = pruned_base("2:4");
  adapters::attach(dense, c);
  for (size_t i = 0; i < adapters::trainable_parameters(m).size(); ++i)
    adapters::trainable_parameters(dense)[i].second.copy_(
        adapters::trainable_parameters(m)[i].second);
  adapters::merge_into_base(dense, MergeForm::dense);
  EXPECT_LE((dense->forward(ids()) - adapted).abs().max().item<double>(), 1e-4);
  EXPECT_FALSE(torch::equal(zero_patterns(dense)[0], zeros[0]));  // dense merge fills zeros
  adapters::merge_into_base(m, MergeForm::masked);                // LoRA*
  auto masked = zero_patterns(m);
  for (size_t i = 0; i < zeros.size(); ++i) EXPECT_TRUE(torch::equal(masked[i], zeros[i]));
}
