// Checkpoint files and the offline merge.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "adapters/adapter.h"
#include "checkpoints/checkpoint.h"
#include "checkpoints/h5.h"
#include "checkpoints/merge.h"
#include "checkpoints/peft.h"
#include "common/config.h"
#include "common/files.h"
#include "model/llama.h"
#include "parallel/grid.h"
#include "test_support.h"
#include "tests/test_paths.h"

using namespace spartan;

namespace {
const std::string kBase = spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";
const std::string kLora = spartan::testing_support::fixtures_dir() + "/lora-gqa";
}  // namespace

TEST(H5File, RoundTripAndChecksums) {
  const std::string path = testing::TempDir() + "/t.h5";
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<int64_t> b = {-7, 1ll << 40};
  {
    checkpoints::H5File f(path, "w");
    f.write("/params/x.y", {2, 3}, checkpoints::H5Type::f32, a.data());
    f.write("/masks/z", {2}, checkpoints::H5Type::i64, b.data());
    f.close_and_sync();
  }
  checkpoints::H5File f(path, "r");
  EXPECT_TRUE(f.has("/params/x.y"));
  EXPECT_FALSE(f.has("/params/nope"));
  EXPECT_EQ(f.info("/params/x.y").shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> a2(6);
  std::vector<int64_t> b2(2);
  f.read("/params/x.y", a2.data());
  f.read("/masks/z", b2.data());
  EXPECT_EQ(a, a2);
  EXPECT_EQ(b, b2);
  EXPECT_THROW(checkpoints::H5File(testing::TempDir() + "/missing.h5", "r"), Error);
}

// A checkpoint holding the PEFT fixture's LoRA, merged offline: the merged folder's logits are
// PEFT's logits of the adapted model (golden.safetensors of tests/fixtures/lora-gqa).
TEST(MergeGolden, MergedLoraFolderGivesPeftLogits) {
  const std::string run = testing::TempDir() + "/merge-golden-run";
  std::filesystem::remove_all(run);
  make_dirs(run);
  auto m = model::load_llama(kBase, torch::kFloat32);
  Config c;
  c.adapter = checkpoints::load_peft_lora(kLora, m);
  c.model.path = kBase;
  c.data.tokenizer = "";
  std::ofstream(run + "/config.resolved.toml") << to_toml(c);
  checkpoints::SaveRequest req;
  req.run_dir = run;
  req.step = 1;
  for (const auto& [name, t] : adapters::trainable_parameters(m))
    req.entries.push_back({"params/" + name, t, {}});
  req.identity = {{"base model", checkpoints::base_model_digest(kBase)}};
  auto grid = parallel::Grid::solo();
  checkpoints::save(*grid, req);

  // Output files of at most 64 KB: the fixture's 420 KB become several files with an index.
  const auto report = checkpoints::merge_run(run, -1, run + "/merged", true, false, 64 << 10);
  EXPECT_TRUE(file_exists(run + "/merged/model.safetensors.index.json"));
  EXPECT_FALSE(file_exists(run + "/merged/model.safetensors"));
  EXPECT_EQ(report.step, 1);
  EXPECT_EQ(report.merged.size(), 10u);  // 5 projections x 2 layers in the fixture
  EXPECT_LE(report.max_logit_diff, 1e-4);
  auto merged = model::load_llama(run + "/merged", torch::kFloat32);
  auto ids = testing_support::golden_tensor(kLora + "/golden.safetensors", "input_ids");
  auto peft = testing_support::golden_tensor(kLora + "/golden.safetensors", "logits");
  // x·(W + ΔW) rounds differently from x·W + x·ΔW: 1e-5 of the largest logit.
  const double tol = 1e-5 * peft.abs().max().item<double>();
  EXPECT_LE((merged->forward(ids) - peft).abs().max().item<double>(), tol);
  // The compact adapter the merge exports loads back (PEFT layout) and gives PEFT's logits.
  auto again = model::load_llama(kBase, torch::kFloat32);
  checkpoints::load_peft_lora(report.adapter, again);
  EXPECT_LE((again->forward(ids) - peft).abs().max().item<double>(), 1e-5);
}
