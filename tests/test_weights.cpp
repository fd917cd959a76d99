// WeightStore: whole and sliced reads, sharded folders, saving.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include "common/error.h"
#include "model/weights.h"
#include "tests/test_paths.h"

using spartan::model::NamedTensors;
using spartan::model::WeightStore;

namespace {
std::string temp_dir(const std::string& name) {
  std::string d = testing::TempDir() + "spartan_w_" + name;
  ::mkdir(d.c_str(), 0755);
  return d;
}
bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}
}  // namespace

TEST(Weights, SlicedReadsEqualSlicesOfFullReads) {
  torch::manual_seed(3);
  auto w = torch::randn({12, 10});
  auto bf = torch::randn({6, 8}).to(torch::kBFloat16);
  auto v = torch::randn({5, 3, 4});
  std::string dir = temp_dir("slices");
  spartan::model::save_weights(dir, {{"w", w}, {"bf", bf}, {"v", v}});
  WeightStore store(dir);
  EXPECT_TRUE(torch::equal(store.load("w", torch::kFloat32), w));
  EXPECT_TRUE(torch::equal(store.load_rows("w", 3, 7, torch::kFloat32), w.slice(0, 3, 7)));
  EXPECT_TRUE(torch::equal(store.load_cols("w", 2, 9, torch::kFloat32), w.slice(1, 2, 9)));
  EXPECT_TRUE(torch::equal(store.load_rows("v", 1, 4, torch::kFloat32), v.slice(0, 1, 4)));
  // bf16 on disk, sliced and converted.
  EXPECT_TRUE(torch::equal(store.load_cols("bf", 4, 8, torch::kFloat32),
                           bf.slice(1, 4, 8).to(torch::kFloat32)));
  EXPECT_TRUE(torch::equal(store.load_rows("bf", 0, 2, torch::kBFloat16), bf.slice(0, 0, 2)));
  // Tensor-parallel shards of two ranks put back together give the whole tensor.
  auto left = store.load_cols("w", 0, 5, torch::kFloat32);
  auto right = store.load_cols("w", 5, 10, torch::kFloat32);
  EXPECT_TRUE(torch::equal(torch::cat({left, right}, 1), w));
}

TEST(Weights, BadSlicesAreErrors) {
  std::string dir = temp_dir("badslice");
  spartan::model::save_weights(dir, {{"w", torch::zeros({4, 4})}, {"b", torch::zeros({4})}});
  WeightStore store(dir);
  EXPECT_THROW(store.load_rows("w", 2, 5, torch::kFloat32), spartan::Error);
  EXPECT_THROW(store.load_cols("w", -1, 2, torch::kFloat32), spartan::Error);
  EXPECT_THROW(store.load_cols("b", 0, 2, torch::kFloat32), spartan::Error);
  EXPECT_THROW(store.load("nope", torch::kFloat32), spartan::Error);
}

TEST(Weights, ShardedFolderWithIndex) {
  torch::manual_seed(4);
  NamedTensors tensors;
  for (int i = 0; i < 5; ++i) tensors.emplace_back("t" + std::to_string(i), torch::randn({16, 16}));
  std::string dir = temp_dir("sharded");
  spartan::model::save_weights(dir, tensors, /*max_shard_bytes=*/2 * 16 * 16 * 4);
  EXPECT_TRUE(exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(exists(dir + "/model-00003-of-00003.safetensors"));
  EXPECT_FALSE(exists(dir + "/model.safetensors"));
  WeightStore store(dir);
  EXPECT_EQ(store.names().size(), 5u);
  for (const auto& [name, t] : tensors) {
    EXPECT_TRUE(torch::equal(store.load(name, torch::kFloat32), t)) << name;
    EXPECT_TRUE(torch::equal(store.load_cols(name, 8, 16, torch::kFloat32), t.slice(1, 8, 16)));
  }
  EXPECT_NE(store.file_of("t0").path(), store.file_of("t4").path());
}

TEST(Weights, HuggingFaceShardedFolder) {
  WeightStore store(spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa");
  EXPECT_EQ(store.names().size(), 2u * 9 + 3);
  EXPECT_EQ(store.info("model.layers.1.self_attn.k_proj.weight").shape,
            (std::vector<int64_t>{32, 64}));
  EXPECT_NE(store.file_of("lm_head.weight").path(),
            store.file_of("model.embed_tokens.weight").path());
}

TEST(Weights, MissingFolderIsAClearError) {
  try {
    WeightStore store(temp_dir("empty"));
    FAIL();
  } catch (const spartan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no model.safetensors"), std::string::npos);
  }
}
