// Prefix tuning: forward and gradients equal HF PEFT's PrefixTuningConfig with the
// reparameterisation MLP (golden); the exported inference form equals what PEFT saves, and
// PEFT's saved folder loads back to the same logits; parameter count; fp64 gradients of the
// encoder equal finite differences.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adapter.h"
#include "adapters/prefix.h"
#include "checkpoints/peft.h"
#include "model/llama.h"
#include "model/weights.h"
#include "test_support.h"
#include "tests/test_paths.h"

using namespace spartan;

namespace {
const std::string kBase = spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";
const std::string kPrefix = spartan::testing_support::fixtures_dir() + "/prefix-gqa";

torch::Tensor golden(const std::string& name) {
  return testing_support::golden_tensor(kPrefix + "/golden.safetensors", name);
}

// The fixture's training-form encoder (P 4, E 2 KV heads x 16, MLP width 24) on the base.
std::shared_ptr<adapters::PrefixEncoder> attach_fixture(model::Llama& m) {
  auto encoder = std::make_shared<adapters::PrefixEncoder>(4, 32, 2, 24, true);
  model::SafetensorsFile file(kPrefix + "/train.safetensors");
  torch::NoGradGuard no_grad;
  for (auto& p : encoder->named_parameters())
    p.value().copy_(model::read_tensor(file, p.key(), torch::kFloat32));
  m->set_base_trainable(false);
  m->attach_kv(encoder);
  return encoder;
}
}  // namespace

TEST(Prefix, CountsItsFormula) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig c;
  c.method = "prefix";
  c.prefix.num_virtual_tokens = 5;
  c.prefix.encoder_hidden_size = 24;
  const int64_t P = 5, E = 32, h = 24, L = 2;
  EXPECT_EQ(adapters::attach(m, c).num_trainable(), P * E + E * h + h + h * 2 * L * E + 2 * L * E);
  c.prefix.projection = false;
  auto plain = model::load_llama(kBase, torch::kFloat32);
  EXPECT_EQ(adapters::attach(plain, c).num_trainable(), P * 2 * L * E);
}

TEST(PrefixGolden, ForwardAndGradientsEqualPeft) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  auto encoder = attach_fixture(m);
  auto logits = m->forward(golden("input_ids"));
  EXPECT_LE((logits - golden("logits")).abs().max().item<double>(), 1e-5);
  auto loss = model::causal_lm_loss(logits, golden("labels"));
  EXPECT_NEAR(loss.item<double>(), golden("loss").item<double>(), 1e-6);
  loss.backward();
  int checked = 0;
  for (const auto& p : encoder->named_parameters()) {
    auto expected = golden("grad." + p.key());
    const double scale = expected.abs().max().item<double>();
    EXPECT_LE((p.value().grad() - expected).abs().max().item<double>(), 1e-5 * scale + 1e-8)
        << p.key();
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

// Saved without the MLP: Spartan's export equals PEFT's save_pretrained, and PEFT's folder
// loads into the same logits.
TEST(PrefixGolden, ExportEqualsPeftAndLoadsBack) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  attach_fixture(m);
  const std::string dir = ::testing::TempDir() + "spartan_prefix_export";
  checkpoints::save_peft_prefix(dir, m, kBase);
  auto mine =
      testing_support::golden_tensor(dir + "/adapter_model.safetensors", "prompt_embeddings");
  auto peft = testing_support::golden_tensor(kPrefix + "/adapter/adapter_model.safetensors",
                                             "prompt_embeddings");
  ASSERT_TRUE(mine.sizes().equals(peft.sizes()));
  EXPECT_LE((mine - peft).abs().max().item<double>(), 1e-6);
  for (const std::string& folder : {dir, kPrefix + "/adapter"}) {
    auto back = model::load_llama(kBase, torch::kFloat32);
    EXPECT_EQ(checkpoints::load_peft_adapter(folder, back).method, "prefix");
    torch::NoGradGuard no_grad;
    EXPECT_LE((back->forward(golden("input_ids")) - golden("logits")).abs().max().item<double>(),
              1e-5)
        << folder;
  }
}

TEST(Prefix, EncoderGradientsMatchFiniteDifferencesInFp64) {
  torch::manual_seed(6);
  adapters::PrefixEncoder encoder(3, 4, 2, 5, true);
  encoder.to(torch::kFloat64);
  const auto w = torch::randn({2, 2, 3, 4}, torch::kFloat64);
  std::vector<torch::Tensor> params;
  for (const auto& p : encoder.parameters()) params.push_back(p);
  testing_support::expect_gradients_match_finite_differences(
      [&] { return (encoder.forward() * w).sum(); }, params, 1e-6);
}
