// `spartan model info`: parameter counts and measured sparsity.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include "model/inspect.h"
#include "model/llama.h"
#include "tests/test_paths.h"

using namespace spartan::model;

TEST(Inspect, GoldenFolderNumbers) {
  ModelStats s = inspect_model(spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa");
  // 2 layers, hidden 64, intermediate 176, 4 heads of 16, 2 KV heads, vocab 101, untied.
  const int64_t layer = 64 * 64 * 2 + 2 * 64 * 32 + 3 * 64 * 176 + 2 * 64;
  EXPECT_EQ(s.num_parameters, 2 * 101 * 64 + 2 * layer + 64);
  EXPECT_EQ(s.num_parameters, s.arch.num_parameters());
  EXPECT_EQ(s.tensors.size(), 21u);
  EXPECT_EQ(s.zeros, 0);
  for (const auto& t : s.tensors) EXPECT_EQ(t.nm, "") << t.name;
  std::string text = format_model_stats(s);
  EXPECT_NE(text.find("parameters   105408"), std::string::npos) << text;
  EXPECT_NE(text.find("F32 105408"), std::string::npos) << text;
}

TEST(Inspect, NMPatternAndSparsityOfAPrunedFolder) {
  auto model =
      load_llama(spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa", torch::kFloat32);
  {
    torch::NoGradGuard no_grad;
    // 2:4 on every q_proj: keep the two largest of each group of four inputs.
    for (int64_t l = 0; l < 2; ++l) {
      auto& w = model->projection(l, Proj::q)->weight;
      auto groups = w.view({w.size(0), -1, 4});
      auto keep = std::get<1>(groups.abs().topk(2, -1));
      auto mask = torch::zeros_like(groups).scatter_(-1, keep, 1.0);
      groups.mul_(mask);
    }
    // Unstructured 25% on layer 0's up_proj: zero the first quarter of entries.
    auto& up = model->projection(0, Proj::up)->weight;
    up.view({-1}).slice(0, 0, up.numel() / 4).zero_();
  }
  std::string dir = testing::TempDir() + "spartan_inspect_pruned";
  ::mkdir(dir.c_str(), 0755);
  model->save(dir);
  ModelStats s = inspect_model(dir);
  for (const auto& t : s.tensors) {
    if (t.name.find("q_proj") != std::string::npos) {
      EXPECT_EQ(t.nm, "2:4") << t.name;
      EXPECT_DOUBLE_EQ(t.sparsity(), 0.5);
    } else if (t.name == "model.layers.0.mlp.up_proj.weight") {
      EXPECT_DOUBLE_EQ(t.sparsity(), 0.25);
      EXPECT_EQ(t.nm, "");  // the dense rows of the last 3/4 hold groups with 4 non-zeros
    } else {
      EXPECT_EQ(t.zeros, 0) << t.name;
    }
  }
  EXPECT_EQ(s.linear_zeros, 2 * 64 * 64 / 2 + 176 * 64 / 4);
}

TEST(Inspect, MaxNonzerosPerGroup) {
  std::vector<float> v = {1, 0, 0, 2, 0, 0, 0, 3,   // row 0: groups of 4 hold 2 and 1
                          0, 1, 1, 1, 0, 0, 0, 0};  // row 1: 3 and 0
  EXPECT_EQ(max_nonzeros_per_group(v, 8, 4), 3);
  EXPECT_EQ(max_nonzeros_per_group(v, 8, 8), 3);
  EXPECT_EQ(max_nonzeros_per_group(v, 8, 2), 2);
}
