// config.json as transformers 4.x and 5.x write it: rotary settings in either form, dtype names,
// head_dim, and unsupported rope scaling refused with its name.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "model/hf_config.h"
#include "model/memory.h"
#include "tests/llama_shapes.h"

using spartan::model::read_hf_config;

namespace {

// A scratch folder holding one config.json, removed at the end of the test.
class HfConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "spartan-hf-config-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& extra) {
    std::ofstream(dir_ + "/config.json")
        << R"({"model_type": "llama", "vocab_size": 100, "hidden_size": 64,
               "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2)"
        << extra << "}";
  }
  std::string dir_;
};

TEST_F(HfConfigTest, Transformers4Form) {
  write(R"(, "rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 4.0},
           "torch_dtype": "bfloat16")");
  const auto a = read_hf_config(dir_);
  EXPECT_EQ(a.rope_theta, 500000.0);
  EXPECT_EQ(a.rope_scaling_factor, 4.0);
  EXPECT_EQ(a.torch_dtype, "bfloat16");
}

TEST_F(HfConfigTest, Transformers5Form) {
  write(R"(, "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
           "dtype": "bfloat16", "head_dim": 16)");
  const auto a = read_hf_config(dir_);
  EXPECT_EQ(a.rope_theta, 500000.0);
  EXPECT_EQ(a.rope_scaling_factor, 1.0);
  EXPECT_EQ(a.torch_dtype, "bfloat16");
}

TEST_F(HfConfigTest, Transformers5LinearScaling) {
  write(R"(, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "linear", "factor": 2.0})");
  EXPECT_EQ(read_hf_config(dir_).rope_scaling_factor, 2.0);
}

TEST_F(HfConfigTest, RopeTypeKeyInLegacyScaling) {
  write(R"(, "rope_scaling": {"rope_type": "linear", "factor": 8.0})");
  EXPECT_EQ(read_hf_config(dir_).rope_scaling_factor, 8.0);
}

TEST_F(HfConfigTest, UnsupportedScalingIsNamed) {
  write(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0})");
  try {
    read_hf_config(dir_);
    FAIL() << "llama3 rope scaling was accepted";
  } catch (const spartan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope scaling type 'llama3'"), std::string::npos)
        << e.what();
  }
}

TEST_F(HfConfigTest, FractionalAndNonPositiveSizesAreRefused) {
  write(R"(, "max_position_embeddings": 0)");
  EXPECT_THROW(read_hf_config(dir_), spartan::Error);
  write(R"(, "max_position_embeddings": -1)");
  EXPECT_THROW(read_hf_config(dir_), spartan::Error);
  std::ofstream(dir_ + "/config.json")
      << R"({"model_type": "llama", "vocab_size": 100, "hidden_size": 64.5,
             "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4})";
  try {
    read_hf_config(dir_);
    FAIL() << "hidden_size 64.5 was accepted";
  } catch (const spartan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'hidden_size' must be a whole number"), std::string::npos)
        << e.what();
  }
}

TEST_F(HfConfigTest, HeadDimOtherThanHiddenOverHeadsIsRefused) {
  write(R"(, "head_dim": 32)");
  EXPECT_THROW(read_hf_config(dir_), spartan::Error);
}

}  // namespace

// The memory estimate reproduces the published arithmetic of LLaMA-2-70B (bf16 base ≈ 138 GB),
// shards it over TP and PP, and refuses what cannot fit with the numbers.
TEST(Memory, EstimateOfLlama2_70B) {
  const auto a = spartan::testing_support::llama2_70b();
  spartan::model::MemoryInputs in;
  in.base_dtype_bytes = 2;
  auto whole = spartan::model::estimate_memory(a, in);
  EXPECT_NEAR(whole.base / 1e9, 137.95, 0.1);
  EXPECT_EQ(whole.activations, 0);
  in.tp = 8;
  in.pp = 4;
  in.seq_len = 4096;
  in.adapter_r = 16;
  auto sharded = spartan::model::estimate_memory(a, in);
  EXPECT_NEAR(sharded.base / 1e9, 137.95 / 32, 0.5);  // the embedding or the head per stage
  EXPECT_GT(sharded.activations, 0);
  EXPECT_GT(sharded.trainable, 0);
  EXPECT_NO_THROW(spartan::model::check_memory(sharded, 80e9, "here"));
  try {
    spartan::model::check_memory(whole, 80e9, "here");
    ADD_FAILURE() << "138 GB fitted in 80 GB";
  } catch (const spartan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs at least 138 GB"), std::string::npos) << e.what();
  }
  EXPECT_GT(spartan::model::machine_memory_per_rank(), 1e8);
}

// Sizes whose parameter count would overflow are refused before anything counts them.
TEST(Memory, AbsurdShapesAreRefused) {
  spartan::model::LlamaArch a;
  a.vocab_size = int64_t(1) << 62;
  EXPECT_THROW(spartan::model::check_arch_size(a, "config.json"), spartan::Error);
  a.vocab_size = 32000;
  a.num_layers = 1000000;
  EXPECT_THROW(spartan::model::check_arch_size(a, "config.json"), spartan::Error);
  a.num_layers = 80;
  EXPECT_NO_THROW(spartan::model::check_arch_size(a, "config.json"));
}
