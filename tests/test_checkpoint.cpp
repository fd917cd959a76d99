// Checkpoint files and the offline merge.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>

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

// An edited manifest is an error naming the tensor, never a read of the wrong size: a mask
// entry relabelled float32 once made the read overrun its buffer (free(): invalid pointer).
TEST(Checkpoint, TamperedManifestEntriesAreErrors) {
  const std::string run = testing::TempDir() + "/tampered-run";
  std::filesystem::remove_all(run);
  make_dirs(run);
  checkpoints::SaveRequest req;
  req.run_dir = run;
  req.step = 1;
  req.entries.push_back({"masks/m", torch::arange(6, torch::kInt64).view({2, 3}), {}});
  req.entries.push_back({"params/p", torch::ones({2, 3}), {}});
  auto grid = parallel::Grid::solo();
  const std::string folder = checkpoints::save(*grid, req);
  const std::string manifest = folder + "/manifest.json";
  nlohmann::json original;
  std::ifstream(manifest) >> original;
  const auto expect_error = [&](const std::function<void(nlohmann::json&)>& edit,
                                const std::string& key, const std::string& text) {
    nlohmann::json j = original;
    edit(j);
    std::ofstream(manifest) << j.dump();
    checkpoints::Checkpoint ck(folder);
    try {
      ck.global(key);
      ADD_FAILURE() << "no error for: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error([](auto& j) { j["tensors"]["masks/m"]["dtype"] = "float32"; }, "masks/m",
               "stored with another type than the manifest's 'float32'");
  expect_error([](auto& j) { j["tensors"]["params/p"]["dtype"] = "int64"; }, "params/p",
               "stored with another type");
  expect_error([](auto& j) { j["tensors"]["params/p"]["dtype"] = "complex"; }, "params/p",
               "has dtype 'complex'");
  expect_error([](auto& j) { j["tensors"]["params/p"]["global_shape"] = {2, -3}; }, "params/p",
               "negative size");
  expect_error([](auto& j) { j["tensors"]["params/p"]["shards"][0]["dim"] = 0; }, "params/p",
               "does not match the manifest");
  expect_error([](auto& j) { j["tensors"]["params/p"].erase("shards"); }, "params/p",
               "malformed");
  std::ofstream(manifest) << original.dump();
  EXPECT_TRUE(torch::equal(checkpoints::Checkpoint(folder).global("masks/m"),
                           torch::arange(6, torch::kInt64).view({2, 3})));
  std::filesystem::remove_all(run);
}

// Without a usable `latest` the newest complete step folder is found; step folders without a
// complete checkpoint are an error, never a fresh start on top of them.
TEST(Checkpoint, LatestFallsBackToTheNewestCompleteStep) {
  const std::string run = testing::TempDir() + "/latest-run";
  std::filesystem::remove_all(run);
  make_dirs(run);
  auto grid = parallel::Grid::solo();
  std::vector<std::string> folders;
  for (int64_t step : {1, 2}) {
    checkpoints::SaveRequest req;
    req.run_dir = run;
    req.step = step;
    req.entries.push_back({"params/p", torch::full({2}, static_cast<double>(step)), {}});
    folders.push_back(checkpoints::save(*grid, req));
  }
  const std::string pointer = run + "/checkpoints/latest";
  EXPECT_EQ(checkpoints::latest(run), folders[1]);
  std::filesystem::remove(pointer);
  EXPECT_EQ(checkpoints::latest(run), folders[1]);
  std::ofstream(pointer) << "";
  EXPECT_EQ(checkpoints::latest(run), folders[1]);
  std::ofstream(pointer) << "step-00000099\n";
  EXPECT_EQ(checkpoints::latest(run), folders[1]);
  std::ofstream(folders[1] + "/manifest.json") << "{ damaged";
  EXPECT_EQ(checkpoints::latest(run), folders[0]);
  std::filesystem::remove(folders[0] + "/manifest.json");
  try {
    checkpoints::latest(run);
    ADD_FAILURE() << "step folders without a checkpoint were taken for a new run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step-00000001"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(run + "/checkpoints");
  EXPECT_EQ(checkpoints::latest(run), "");
  std::filesystem::remove_all(run);
}

// Weights edited with names, shapes and config kept: the value digest changes, the structural
// one does not (resume and merge compare both).
TEST(Checkpoint, ValueDigestSeesEditedWeights) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  const std::string a = testing::TempDir() + "/values-a", b = testing::TempDir() + "/values-b";
  m->save(a);
  {
    torch::NoGradGuard no_grad;
    m->projection(1, model::Proj::down)->weight[2][3] += 0.5;
  }
  m->save(b);
  EXPECT_EQ(checkpoints::base_model_digest(a), checkpoints::base_model_digest(b));
  EXPECT_NE(checkpoints::base_values_digest(a), checkpoints::base_values_digest(b));
  EXPECT_EQ(checkpoints::base_values_digest(a), checkpoints::base_values_digest(a));
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
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
