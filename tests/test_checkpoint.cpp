// Checkpoint files and the offline merge.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "adapters/adapter.h"
#include "checkpoints/checkpoint.h"
#include "checkpoints/h5.h"
#include "checkpoints/merge.h"
#include "checkpoints/peft.h"
#include "common/config.h"
#include "common/crc32c.h"
#include "common/files.h"
#include "common/hash.h"
#include "model/llama.h"
#include "model/weights.h"
#include "parallel/grid.h"
#include "test_support.h"
#include "tests/test_paths.h"

using namespace spartan;

namespace {
const std::string kBase = spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";
const std::string kLora = spartan::testing_support::fixtures_dir() + "/lora-gqa";

// A save request shaped like the trainer's: each trained tensor with its two AdamW moments,
// stage 0's RNG state and the trainer's state fields (the manifest's schema requires them).
checkpoints::SaveRequest trainer_like_request(
    const std::string& run, int64_t step,
    const std::vector<std::pair<std::string, torch::Tensor>>& trained) {
  checkpoints::SaveRequest req;
  req.run_dir = run;
  req.step = step;
  for (const auto& [name, t] : trained) {
    req.entries.push_back({"params/" + name, t, {}});
    req.entries.push_back({"optim/" + name + "/exp_avg", torch::zeros_like(t), {}});
    req.entries.push_back({"optim/" + name + "/exp_avg_sq", torch::zeros_like(t), {}});
  }
  req.entries.push_back(
      {"rng/pp0", torch::arange(4, torch::kInt64), {model::TpPlacement::sharded, 0}});
  req.state = {{"step", step},         {"tokens", 8 * step}, {"sampler_epoch", 0},
               {"sampler_step", step}, {"adam_steps", step}, {"loss", 1.5}};
  return req;
}
}  // namespace

TEST(H5File, RoundTripAndChecksums) {
  const std::string path = testing::TempDir() + "/t.h5";
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<int64_t> b = {-7, 1ll << 40};
  {
    checkpoints::H5File f(path, "w");
    f.write("/params/x.y", {2, 3}, checkpoints::ElementType::f32, a.data());
    f.write("/masks/z", {2}, checkpoints::ElementType::i64, b.data());
    f.close_and_sync();
  }
  auto f = checkpoints::open_shard(path);
  EXPECT_TRUE(f->has("/params/x.y"));
  EXPECT_FALSE(f->has("/params/nope"));
  EXPECT_EQ(f->info("/params/x.y").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f->info("/masks/z").type, checkpoints::ElementType::i64);
  std::vector<float> a2(6);
  std::vector<int64_t> b2(2);
  f->read_all("/params/x.y", a2.data());
  f->read_all("/masks/z", b2.data());
  EXPECT_EQ(a, a2);
  EXPECT_EQ(b, b2);
  float last = 0;
  f->read_bytes("/params/x.y", 20, 4, &last);
  EXPECT_EQ(last, 6);
  EXPECT_THROW(checkpoints::H5File(testing::TempDir() + "/missing.h5", "r"), Error);
}

// A 1-D dataset written and read by element ranges (the pack of small tensors); a range past
// its end is an error, not a read outside it.
TEST(H5File, RangesOfAOneDimensionalDataset) {
  const std::string path = testing::TempDir() + "/ranges.h5";
  {
    checkpoints::H5File f(path, "w");
    f.create("/packed/float32", 10, checkpoints::ElementType::f32);
    std::vector<float> head = {0, 1, 2, 3}, tail = {4, 5, 6, 7, 8, 9};
    f.write_at("/packed/float32", 0, 4, checkpoints::ElementType::f32, head.data());
    f.write_at("/packed/float32", 4, 6, checkpoints::ElementType::f32, tail.data());
    f.close_and_sync();
  }
  checkpoints::H5File f(path, "r");
  std::vector<float> mid(3);
  f.read_bytes("/packed/float32", 12, 12, mid.data());
  EXPECT_EQ(mid, (std::vector<float>{3, 4, 5}));
  EXPECT_THROW(f.read_bytes("/packed/float32", 32, 12, mid.data()), Error);
  EXPECT_THROW(f.read_bytes("/packed/float32", -4, 4, mid.data()), Error);
  std::filesystem::remove(path);
}

// Format 3 and 4: tensors of 1 MiB and more are datasets of their own, smaller ones share a pack;
// both read back exactly, and a changed byte in either is an error naming the tensor's dataset and
// the file, never wrong values.
TEST(Checkpoint, LargeAndPackedTensorsRoundTripAndDamageIsNamed) {
  const std::string run = testing::TempDir() + "/format3-run";
  std::filesystem::remove_all(run);
  make_dirs(run);
  torch::manual_seed(3);
  const auto big = torch::randn({512, 1024});  // 2 MiB
  const auto small = torch::randn({3, 5});
  auto req = trainer_like_request(run, 2, {{"big", big}, {"small", small}});
  auto grid = parallel::Grid::solo();
  const std::string folder = checkpoints::save(*grid, req);
  const std::string shard = folder + "/shard-pp00-tp00.h5";
  {
    checkpoints::Checkpoint ck(folder);
    EXPECT_TRUE(torch::equal(ck.global("params/big"), big));
    EXPECT_TRUE(torch::equal(ck.global("params/small"), small));
    EXPECT_TRUE(torch::equal(ck.global("rng/pp0"), torch::arange(4, torch::kInt64)));
    const auto& shards = ck.manifest()["tensors"];
    EXPECT_FALSE(shards["params/big"]["shards"][0].contains("offset"));
    EXPECT_TRUE(shards["params/small"]["shards"][0].contains("offset"));
    checkpoints::H5File f(shard, "r");
    EXPECT_TRUE(f.has("/params/big"));
    EXPECT_FALSE(f.has("/params/small"));
  }
  // One float of each tensor changed in place, found by its bytes in the file.
  std::ifstream in(shard, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& [key, t] :
       {std::pair<std::string, torch::Tensor>{"params/big", big}, {"params/small", small}}) {
    const std::string value(static_cast<const char*>(t.data_ptr()) + 4 * 7, 4);
    const size_t at = bytes.find(value);
    ASSERT_NE(at, std::string::npos) << key;
    std::string damaged = bytes;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x10);
    std::ofstream(shard, std::ios::binary | std::ios::trunc) << damaged;
    try {
      checkpoints::Checkpoint(folder).global(key);
      ADD_FAILURE() << "a changed byte of " << key << " was read";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("dataset /" + key + " fails its checksum"),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(shard), std::string::npos) << e.what();
    }
  }
  std::filesystem::remove_all(run);
}

// Format 4: a range of a tensor reads only the MiB blocks that hold it, each checked by its own
// CRC; a damaged block fails the reads that touch it and no other. The same checkpoint relabelled
// format 3 (one CRC a tensor) gives the same ranges, streamed through one block.
TEST(Checkpoint, ARangeReadsOnlyTheBlocksThatHoldIt) {
  const std::string run = testing::TempDir() + "/ranges-run";
  std::filesystem::remove_all(run);
  make_dirs(run);
  torch::manual_seed(4);
  const auto big = torch::randn({1024, 1024});  // 4 MiB: four blocks of 256 rows
  const auto tall = torch::randn({3, 200, 1000});
  auto req = trainer_like_request(run, 2, {{"big", big}, {"tall", tall}});
  auto grid = parallel::Grid::solo();
  const std::string folder = checkpoints::save(*grid, req);
  constexpr int64_t MiB = 1 << 20;
  {
    checkpoints::Checkpoint ck(folder);
    EXPECT_EQ(ck.manifest()["tensors"]["params/big"]["shards"][0]["crc32c_blocks"]
                  .get<std::string>()
                  .size(),
              32u);
    const auto reads = [&](int64_t dim, int64_t begin, int64_t size) {
      const int64_t before = ck.bytes_read();
      const auto got = ck.range("params/big", dim, begin, size);
      EXPECT_TRUE(torch::equal(got, big.narrow(dim, begin, size))) << dim << " " << begin;
      return ck.bytes_read() - before;
    };
    EXPECT_EQ(reads(0, 256, 256), MiB);      // block 1 exactly, straight into place
    EXPECT_EQ(reads(0, 300, 100), MiB);      // inside block 1
    EXPECT_EQ(reads(0, 200, 100), 2 * MiB);  // across blocks 0 and 1
    EXPECT_EQ(reads(1, 512, 512), 4 * MiB);  // every row: each block once
    for (int64_t dim = 0; dim < 3; ++dim)
      EXPECT_TRUE(torch::equal(ck.range("params/tall", dim, 1, 2), tall.narrow(dim, 1, 2)));
  }
  // The checkpoint as format 3 wrote it: one CRC a tensor.
  const std::string manifest = folder + "/manifest.json";
  nlohmann::json m;
  std::ifstream(manifest) >> m;
  const nlohmann::json format4 = m;
  m["format_version"] = 3;
  checkpoints::Checkpoint as_saved(folder);
  for (auto& [key, t] : m["tensors"].items())
    for (auto& s : t["shards"])
      if (s.contains("crc32c_blocks")) {
        s.erase("crc32c_blocks");
        const auto whole = as_saved.global(key);
        s["crc32c"] = hex32(crc32c(whole.data_ptr(), whole.nbytes()));
      }
  m["checksum"] = checkpoints::manifest_checksum(m);
  std::ofstream(manifest) << m.dump(1);
  {
    checkpoints::Checkpoint ck(folder);
    EXPECT_TRUE(torch::equal(ck.range("params/big", 1, 100, 300), big.narrow(1, 100, 300)));
    EXPECT_TRUE(torch::equal(ck.range("params/tall", 2, 10, 20), tall.narrow(2, 10, 20)));
    EXPECT_TRUE(torch::equal(ck.global("params/big"), big));
  }
  // One byte of block 3 of `big` changed: as format 3, every read of it fails; as format 4, only
  // the reads that touch block 3.
  const std::string shard = folder + "/shard-pp00-tp00.h5";
  std::ifstream in(shard, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const std::string value(static_cast<const char*>(big.data_ptr()) + 3 * MiB + 8, 4);
  const size_t at = bytes.find(value);
  ASSERT_NE(at, std::string::npos);
  bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
  std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes;
  const auto fails = [&](int64_t dim, int64_t begin, int64_t size) {
    try {
      checkpoints::Checkpoint(folder).range("params/big", dim, begin, size);
      return false;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("dataset /params/big fails its checksum"),
                std::string::npos)
          << e.what();
      return true;
    }
  };
  EXPECT_TRUE(fails(0, 0, 256));
  std::ofstream(manifest) << format4.dump(1);
  EXPECT_FALSE(fails(0, 0, 768));
  EXPECT_TRUE(fails(0, 700, 100));
  EXPECT_TRUE(fails(1, 0, 1));
  std::filesystem::remove_all(run);
}

// A checkpoint written in format 2 (one Fletcher32-checksummed chunk per tensor, no CRC in the
// manifest; an SPP run of a tiny model, fixtures/checkpoint-v2) still reads, checksums included.
TEST(Checkpoint, FormatTwoStillReads) {
  const std::string folder = spartan::testing_support::fixtures_dir() + "/checkpoint-v2";
  checkpoints::Checkpoint ck(folder);
  EXPECT_EQ(ck.manifest()["format_version"], 2);
  int64_t expected = 0;
  for (const auto& [key, t] : ck.manifest()["tensors"].items()) {
    int64_t n = 8 - 4 * (t["dtype"] == "float32");
    for (int64_t d : t["global_shape"].get<std::vector<int64_t>>()) n *= d;
    expected += n;
  }
  EXPECT_EQ(ck.verify(), expected);
  const auto rng = ck.global("rng/pp0");
  EXPECT_EQ(rng.scalar_type(), torch::kInt64);
  for (const auto& [key, t] : ck.manifest()["tensors"].items())
    if (key.rfind("params/", 0) == 0) {
      const auto p = ck.global(key);
      EXPECT_TRUE(torch::isfinite(p).all().item<bool>()) << key;
      EXPECT_GT(p.abs().sum().item<double>(), 0) << key;
    }
}

// An edited manifest is refused when the checkpoint is opened, by its checksum or, with the
// checksum recomputed, by the field's check; a shard whose HDF5 type is not the manifest's is an
// error naming the tensor, never a read of the wrong size (a mask entry relabelled float32 once
// overran its buffer: free(): invalid pointer).
TEST(Checkpoint, TamperedManifestsAreRefused) {
  const std::string run = testing::TempDir() + "/tampered-run";
  std::filesystem::remove_all(run);
  make_dirs(run);
  auto req = trainer_like_request(run, 4, {{"p", torch::ones({2, 3})}});
  req.entries.push_back({"masks/m", torch::arange(6, torch::kInt64).view({2, 3}), {}});
  auto grid = parallel::Grid::solo();
  const std::string folder = checkpoints::save(*grid, req);
  const std::string manifest = folder + "/manifest.json";
  nlohmann::json original;
  std::ifstream(manifest) >> original;
  EXPECT_EQ(original["format_version"], 4);
  EXPECT_EQ(original["checksum"], checkpoints::manifest_checksum(original));
  // Edited as is, the checksum refuses it (an unknown format version before that); with the
  // checksum recomputed, the field's check.
  const auto refused = [&](const std::function<void(nlohmann::json&)>& edit,
                           const std::string& text, bool checksum_first = true) {
    for (bool resum : {false, true}) {
      nlohmann::json j = original;
      edit(j);
      if (resum) j["checksum"] = checkpoints::manifest_checksum(j);
      std::ofstream(manifest) << j.dump(1);
      try {
        checkpoints::Checkpoint ck(folder);
        ck.verify();
        ADD_FAILURE() << "no error for: " << text;
      } catch (const Error& e) {
        const std::string expected =
            resum || !checksum_first ? text : "does not match its checksum";
        EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(manifest), std::string::npos) << e.what();
      }
    }
  };
  refused([](auto& j) { j["tensors"]["masks/m"]["dtype"] = "float32"; },
          "'tensors.masks/m.dtype' is \"float32\", not \"int64\"");
  refused([](auto& j) { j["tensors"]["params/p"]["dtype"] = "int64"; },
          "'tensors.params/p.dtype' is \"int64\"");
  refused(
      [](auto& j) {
        j["tensors"]["params/p"]["global_shape"] = {2, -3};
      },
      "'tensors.params/p.global_shape[1]' is -3");
  refused([](auto& j) { j["tensors"]["params/p"]["shards"][0]["dim"] = 0; },
          "'tensors.params/p.shards' cover 0 of the 2 entries of dimension 0");
  refused([](auto& j) { j["tensors"]["params/p"].erase("shards"); },
          "'tensors.params/p.shards' is missing");
  refused([](auto& j) { j["state"]["step"] = 2; }, "'state.step' differs");
  refused([](auto& j) { j["step"] = 2; }, "'state.step' differs");
  refused([](auto& j) { j["step"] = "four"; }, "'step' must be an integer");
  refused([](auto& j) { j["state"].erase("sampler_epoch"); }, "'state.sampler_epoch' is missing");
  refused([](auto& j) { j["state"]["adam_steps"] = 9; }, "'state.adam_steps' is 9");
  refused([](auto& j) { j["topology"]["tp"] = 2; }, "'tensors.rng/pp0.shards' hold 1 slices");
  refused([](auto& j) { j["tensors"].erase("rng/pp0"); }, "'tensors.rng/pp0' is missing");
  refused([](auto& j) { j["tensors"].erase("optim/p/exp_avg"); },
          "'tensors.optim/p/exp_avg' is missing");
  refused([](auto& j) { j["tensors"]["params/p"]["shards"][0]["file"] = "../x.h5"; },
          "not a shard file name");
  refused([](auto& j) { j["format_version"] = 7; }, "'format_version' is 7", false);
  refused([](auto& j) { j["tensors"]["params/p"]["shards"][0]["crc32c"] = "0000000G"; },
          "'tensors.params/p.shards[0].crc32c' must be eight lowercase hexadecimal digits");
  refused([](auto& j) { j["tensors"]["params/p"]["shards"][0]["crc32c_blocks"] = "00000000"; },
          "'tensors.params/p.shards[0].crc32c_blocks' comes with \"crc32c\" or \"offset\"");
  refused(
      [](auto& j) {
        auto& s = j["tensors"]["params/p"]["shards"][0];
        s.erase("crc32c");
        s.erase("offset");
        s["crc32c_blocks"] = "0000000000000000";
      },
      "'tensors.params/p.shards[0].crc32c_blocks' must be 8 lowercase hexadecimal digits");
  refused([](auto& j) { j["tensors"]["params/p"]["shards"][0].erase("crc32c"); },
          "'tensors.params/p.shards[0].crc32c' is missing");
  refused([](auto& j) { j["tensors"]["params/p"]["shards"][0]["offset"] = -1; },
          "'tensors.params/p.shards[0].offset' is -1");
  // The HDF5 file's own type decides how many bytes are read.
  std::ofstream(manifest) << original.dump(1);
  {
    checkpoints::H5File f(folder + "/shard-pp00-tp00.h5", "w");
    f.write("/packed/int64", {64}, checkpoints::ElementType::f32, std::vector<float>(64).data());
    f.close_and_sync();
  }
  try {
    checkpoints::Checkpoint(folder).global("masks/m");
    ADD_FAILURE() << "a float32 dataset was read as int64";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stored with another type than the manifest's 'int64'"),
              std::string::npos)
        << e.what();
  }
  std::filesystem::remove_all(run);
}

// Non-finite losses survive the manifest (JSON has no NaN), and format 1's null reads as NaN.
TEST(Checkpoint, NonFiniteLossesRoundTrip) {
  for (double loss : {std::nan(""), HUGE_VAL, -HUGE_VAL, 2.5}) {
    const double back = checkpoints::manifest_loss({{"loss", checkpoints::loss_to_json(loss)}});
    if (std::isnan(loss))
      EXPECT_TRUE(std::isnan(back));
    else
      EXPECT_EQ(back, loss);
  }
  EXPECT_TRUE(std::isnan(checkpoints::manifest_loss({{"loss", nullptr}})));
}

// Without a usable `latest` the newest complete step folder is found; step folders without a
// complete checkpoint are an error, never a fresh start on top of them.
TEST(Checkpoint, LatestFallsBackToTheNewestCompleteStep) {
  const std::string run = testing::TempDir() + "/latest-run";
  std::filesystem::remove_all(run);
  make_dirs(run);
  auto grid = parallel::Grid::solo();
  std::vector<std::string> folders;
  for (int64_t step : {1, 2})
    folders.push_back(checkpoints::save(
        *grid,
        trainer_like_request(run, step, {{"p", torch::full({2}, static_cast<double>(step))}})));
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
  auto req = trainer_like_request(run, 1, adapters::trainable_parameters(m));
  req.identity = {{"base model", checkpoints::base_model_digest(kBase)}};
  auto grid = parallel::Grid::solo();
  checkpoints::save(*grid, req);

  // Output files of at most 64 KB: the fixture's 420 KB become several files with an index.
  checkpoints::MergeOptions options;
  options.max_shard_bytes = 64 << 10;
  const auto report = checkpoints::merge_run(run, -1, run + "/merged", options);
  EXPECT_TRUE(file_exists(run + "/merged/model.safetensors.index.json"));
  EXPECT_FALSE(file_exists(run + "/merged/model.safetensors"));
  EXPECT_EQ(report.step, 1);
  EXPECT_EQ(report.merged.size(), 10u);  // 5 projections x 2 layers in the fixture
  EXPECT_LE(report.max_logit_diff, 1e-4);
  EXPECT_GE(report.max_logit_diff, 0);
  EXPECT_LE(report.max_projection_diff, 1e-4);
  EXPECT_GE(report.max_projection_diff, 0);
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

// The streaming merge on a model over three times its memory bound: SPP on a base with half its
// weights zero, both checks on. What the merge adds to the process's resident memory stays
// within merge_memory_bound() (it never holds the model), and the logit check, which loads one
// layer with the embedding or the head at a time, stays well under the model's size.
TEST(MergeMemory, StaysWithinItsBoundOnAModelSeveralTimesLarger) {
  const std::string run = testing::TempDir() + "/merge-memory-run";
  std::filesystem::remove_all(run);
  make_dirs(run);
  model::LlamaArch arch;
  arch.vocab_size = 1000;
  arch.hidden_size = 256;
  arch.intermediate_size = 1024;
  arch.num_layers = 28;
  arch.num_heads = 4;
  arch.num_kv_heads = 4;
  Config c;
  c.model.path = run + "/base";
  c.data.tokenizer = "";
  c.adapter.method = "spp";
  c.adapter.r = 8;
  int64_t model_bytes = 0;
  {
    torch::manual_seed(7);
    model::Llama m(arch, torch::kFloat32);
    m->init_weights();
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : m->base_parameters()) {
      if (t.dim() == 2 && name.find("layers.") != std::string::npos)
        t.mul_(torch::rand_like(t).gt(0.5));  // half the projections' weights zero
      model_bytes += t.nbytes();
    }
    m->save(c.model.path);
    adapters::attach(m, c.adapter);
    auto trained = adapters::trainable_parameters(m);
    for (auto& [name, t] : trained) t.normal_(0.0, 0.5);  // a trained adapter: no zero update
    std::ofstream(run + "/config.resolved.toml") << to_toml(c);
    auto grid = parallel::Grid::solo();
    checkpoints::save(*grid, trainer_like_request(run, 1, trained));
  }
  checkpoints::MergeOptions options;
  options.block_bytes = 256 << 10;
  const auto r = checkpoints::merge_run(run, -1, run + "/merged", options);
  ASSERT_EQ(r.largest_tensor_bytes, 1024 * 256 * 4);
  ASSERT_GE(model_bytes, 3 * r.memory_bound_bytes) << "the model must be several times the bound";
  EXPECT_LE(r.peak_resident_bytes - r.start_resident_bytes, r.memory_bound_bytes)
      << "peak " << r.peak_resident_bytes << ", start " << r.start_resident_bytes;
  // The check: the libraries' 32 MiB, and a layer with the embedding and the head, four times
  // (two models' tensors and their mapped pages), under half the model.
  const int64_t layer = (4 * 256 * 256 + 3 * 256 * 1024) * 4, ends = 2 * 1000 * 256 * 4;
  EXPECT_LE(r.check_peak_resident_bytes - r.start_resident_bytes, (32 << 20) + 4 * (layer + ends));
  EXPECT_LE(4 * (layer + ends), model_bytes / 2);
  EXPECT_EQ(r.merged.size(), 28u * 7u);
  for (const auto& m : r.merged) {
    EXPECT_NEAR(m.zeros_before, 0.5, 0.05) << m.name;
    EXPECT_EQ(m.zeros_after, m.zeros_before) << m.name;
  }
  // The adapter changed the weights, and the checks see the merged folder compute the adapted
  // model: each projection to fp32 rounding, the first and last layers' outputs likewise.
  EXPECT_GE(r.max_projection_diff, 0);
  EXPECT_LE(r.max_projection_diff, 1e-4);
  EXPECT_GE(r.max_logit_diff, 0);
  EXPECT_LE(r.max_logit_diff, 1e-3);
  auto base =
      model::WeightStore(c.model.path).load("model.layers.3.mlp.up_proj.weight", torch::kFloat32);
  auto merged = model::WeightStore(run + "/merged")
                    .load("model.layers.3.mlp.up_proj.weight", torch::kFloat32);
  EXPECT_GT((merged - base).abs().max().item<double>(), 1e-3);
  std::filesystem::remove_all(run);
}
