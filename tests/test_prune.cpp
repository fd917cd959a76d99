// Pruning: the criteria on hand-made numbers, exact patterns, the reconstruction-error order of
// the three methods, and whole folders (determinism, layout, layer-by-layer evaluation).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "common/error.h"
#include "model/inspect.h"
#include "model/llama.h"
#include "prune/layerwise.h"
#include "prune/masks.h"
#include "prune/pruner.h"
#include "tests/test_paths.h"

using namespace spartan;
using namespace spartan::prune;

namespace {
const std::string kBase = spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";

std::string temp_dir(const std::string& name) {
  std::string d = testing::TempDir() + "spartan_prune_" + name;
  std::system(("rm -rf " + d).c_str());
  return d;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

PruneOptions options(const std::string& method, const std::string& pattern) {
  PruneOptions o;
  o.method = *option_named<PruneMethod>(method);
  o.pattern = parse_pattern(pattern);
  for (model::Proj p : model::kAllProjections) o.targets.push_back(p);
  o.blocksize = 16;
  o.batch = 4;
  return o;
}
}  // namespace

// Wanda's score |W_ij|·‖X_j‖₂ and its per-row choice on a 4×8 example worked by hand.
TEST(Wanda, ScoresAndMaskOnAHandComputedExample) {
  auto W = torch::tensor({{1.f, -2.f, 3.f, -4.f, 5.f, -6.f, 7.f, -8.f},
                          {8.f, 7.f, 6.f, 5.f, 4.f, 3.f, 2.f, 1.f},
                          {1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f},
                          {-1.f, 0.5f, -0.25f, 2.f, -3.f, 0.f, 1.f, 4.f}});
  // Two calibration tokens; ‖X_j‖₂² = Σ x_j²: columns scale by 2, 1, 3, 1, 0.5, 1, 1, 2.
  auto X = torch::tensor(
      {{2.f, 1.f, 3.f, 0.f, 0.3f, 1.f, 0.f, 2.f}, {0.f, 0.f, 0.f, 1.f, 0.4f, 0.f, 1.f, 0.f}});
  auto sq = X.pow(2).sum(0);
  auto scores = wanda_scores(W, sq);
  auto expected = torch::tensor({{2.f, 2.f, 9.f, 4.f, 2.5f, 6.f, 7.f, 16.f},
                                 {16.f, 7.f, 18.f, 5.f, 2.f, 3.f, 2.f, 2.f},
                                 {2.f, 1.f, 3.f, 1.f, 0.5f, 1.f, 1.f, 2.f},
                                 {2.f, 0.5f, 0.75f, 2.f, 1.5f, 0.f, 1.f, 8.f}});
  EXPECT_TRUE(torch::allclose(scores, expected, 1e-6, 1e-6)) << scores;
  // 50% per row: the four lowest scores of each row.
  auto mask = wanda_mask(W, sq, 0.5, Pattern{});
  auto want = torch::tensor({{1, 1, 0, 1, 1, 0, 0, 0},  // 2, 2, 2.5, 4 pruned
                             {0, 0, 0, 1, 1, 1, 1, 1},  // ties at 2: three of {2,2,2} + 3
                             {0, 1, 0, 1, 1, 1, 0, 0},  // 0.5, 1, 1, 1 pruned (ties)
                             {0, 1, 1, 0, 0, 1, 1, 0}})
                  .to(torch::kBool);
  for (int r : {0, 3}) EXPECT_TRUE(torch::equal(mask[r], want[r])) << r << ": " << mask[r];
  EXPECT_EQ(mask.sum(1).eq(4).all().item<bool>(), true);  // exactly half of every row
  // 2:4 on the same scores: in each group of four, the two lowest.
  auto nm = wanda_mask(W, sq, 0.5, parse_pattern("2:4"));
  EXPECT_TRUE(torch::equal(nm[0], torch::tensor({1, 1, 0, 0, 1, 1, 0, 0}).to(torch::kBool)));
  EXPECT_TRUE(torch::equal(nm[3].slice(0, 4, 8), torch::tensor({0, 1, 1, 0}).to(torch::kBool)));
}

TEST(Wanda, ExactSparsityInEveryRow) {
  torch::manual_seed(1);
  auto W = torch::randn({37, 96});
  auto sq = torch::rand({96});
  for (double s : {0.3, 0.5, 0.7}) {
    auto mask = wanda_mask(W, sq, s, Pattern{});
    const int64_t per_row = static_cast<int64_t>(96 * s);
    EXPECT_TRUE(mask.sum(1).eq(per_row).all().item<bool>()) << s;
  }
}

TEST(Patterns, ExactNMInEveryGroupForEveryMethod) {
  torch::manual_seed(2);
  auto X = torch::randn({256, 64});
  auto H = X.t().matmul(X);
  auto sq = X.pow(2).sum(0);
  for (const char* text : {"2:4", "4:8", "2:8", "1:4"}) {
    Pattern p = parse_pattern(text);
    auto W = torch::randn({24, 64});
    std::vector<torch::Tensor> pruned;
    pruned.push_back(W.masked_fill(magnitude_mask(W, 0.5, p), 0.0));
    pruned.push_back(W.masked_fill(wanda_mask(W, sq, 0.5, p), 0.0));
    auto Ws = W.clone();
    sparsegpt_prune(Ws, H, 0.5, p, 16, 0.01);
    pruned.push_back(Ws);
    for (const auto& w : pruned) {
      auto kept = w.ne(0).reshape({24, -1, p.m}).sum(-1);
      EXPECT_TRUE(kept.eq(p.n).all().item<bool>()) << text;  // exactly N of every M stay
      EXPECT_TRUE(check_pattern(w, p).pattern_ok);
      EXPECT_NEAR(check_pattern(w, p).sparsity, 1.0 - double(p.n) / p.m, 1e-9);
    }
  }
}

TEST(Patterns, BadRequestsAreClearErrors) {
  EXPECT_THROW(parse_pattern("4:4"), UsageError);
  EXPECT_THROW(parse_pattern("5:4"), UsageError);
  EXPECT_THROW(parse_pattern("0:4"), UsageError);
  EXPECT_THROW(parse_pattern("2-4"), UsageError);
  EXPECT_THROW(nm_mask(torch::ones({2, 6}), parse_pattern("2:4")), UsageError);  // 6 % 4 != 0
  EXPECT_EQ(parse_pattern("unstructured").nm(), false);
}

// On a layer whose inputs are correlated and unevenly scaled, the output reconstruction error
// orders SparseGPT < Wanda < magnitude, unstructured and 2:4.
TEST(Methods, ReconstructionErrorOrder) {
  torch::manual_seed(3);
  const int64_t in = 128, out = 64, tokens = 2048;
  auto basis = torch::randn({in / 4, in});            // 32 latent factors
  auto scale = torch::exp(torch::randn({in}) * 1.0);  // uneven feature norms
  auto X =
      (torch::randn({tokens, in / 4}).matmul(basis) + 0.1 * torch::randn({tokens, in})) * scale;
  auto W = torch::randn({out, in});
  auto H = X.t().matmul(X);
  auto sq = X.pow(2).sum(0);
  auto error = [&](const torch::Tensor& w) {
    return (X.matmul(W.t()) - X.matmul(w.t())).pow(2).sum().item<double>();
  };
  for (const char* text : {"unstructured", "2:4"}) {
    Pattern p = parse_pattern(text);
    const double mag = error(W.masked_fill(magnitude_mask(W, 0.5, p), 0.0));
    const double wanda = error(W.masked_fill(wanda_mask(W, sq, 0.5, p), 0.0));
    auto Ws = W.clone();
    sparsegpt_prune(Ws, H, 0.5, p, 32, 0.01);
    const double sgpt = error(Ws);
    EXPECT_LT(sgpt, wanda) << text;
    EXPECT_LT(wanda, mag) << text;
  }
}

TEST(Layerwise, LossEqualsTheWholeModel) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  torch::manual_seed(4);
  auto ids = torch::randint(101, {3, 12}, torch::kInt64);
  auto labels = ids.clone();
  labels.slice(1, 0, 4).fill_(-100);
  torch::NoGradGuard no_grad;
  const double whole = model::causal_lm_loss(m->forward(ids), labels).item<double>();
  model::WeightStore store(kBase);
  EXPECT_NEAR(layerwise_loss(store, m->arch(), ids, labels, 2), whole, 1e-5);
}

TEST(PruneFolder, KeepsTheLayoutAndIsDeterministic) {
  torch::manual_seed(5);
  auto calib = torch::randint(101, {8, 16}, torch::kInt64);
  auto eval_ids = torch::randint(101, {4, 16}, torch::kInt64);
  std::string first = temp_dir("a"), second = temp_dir("b");
  for (const char* method : {"magnitude", "wanda", "sparsegpt"}) {
    for (const char* pattern : {"unstructured", "2:4"}) {
      auto o = options(method, pattern);
      auto r1 = prune_folder(kBase, first, o, calib, eval_ids, eval_ids);
      auto r2 = prune_folder(kBase, second, o, calib);
      ASSERT_EQ(r1.tensors.size(), 2u * 7);
      EXPECT_NEAR(r1.target_sparsity, 0.5, 1e-3) << method << " " << pattern;
      for (const auto& t : r1.tensors) EXPECT_TRUE(t.pattern_ok) << t.name;
      EXPECT_TRUE(r1.evaluated);
      EXPECT_GT(r1.loss_after, 0.0);
      // The same bytes twice, in the same files as the input (10 shards and an index).
      for (int k = 1; k <= 10; ++k) {
        char name[64];
        std::snprintf(name, sizeof name, "/model-%05d-of-00010.safetensors", k);
        EXPECT_EQ(read_all(first + name), read_all(second + name)) << method << name;
      }
      EXPECT_EQ(read_all(first + "/model.safetensors.index.json"),
                read_all(kBase + "/model.safetensors.index.json"));
    }
  }
  // The pruned folder loads; untouched tensors are bit-identical to the input.
  auto pruned = model::load_llama(first, torch::kFloat32);
  auto dense = model::load_llama(kBase, torch::kFloat32);
  EXPECT_TRUE(torch::equal(pruned->embed_weight(), dense->embed_weight()));
  EXPECT_TRUE(torch::equal(pruned->layer(1)->input_layernorm->weight,
                           dense->layer(1)->input_layernorm->weight));
  auto info = model::inspect_model(first);
  for (const auto& t : info.tensors)
    if (t.name.find("_proj") != std::string::npos) {
      EXPECT_EQ(t.nm, "2:4") << t.name;
    }
}

TEST(PruneFolder, RefusesToOverwriteItsInput) {
  auto o = options("magnitude", "2:4");
  EXPECT_THROW(prune_folder(kBase, kBase, o, torch::zeros({1, 4}, torch::kInt64)), UsageError);
}
