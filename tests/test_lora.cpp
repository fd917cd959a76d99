// LoRA: starts at the base model; forward and gradients equal HF PEFT (golden); PEFT round trip.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adapter.h"
#include "adapters/lora.h"
#include "checkpoints/peft.h"
#include "common/error.h"
#include "model/llama.h"
#include "test_support.h"
#include "tests/test_paths.h"

using namespace spartan;

namespace {
const std::string kBase = spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";
const std::string kLora = spartan::testing_support::fixtures_dir() + "/lora-gqa";

torch::Tensor golden(const std::string& name) {
  return testing_support::golden_tensor(kLora + "/golden.safetensors", name);
}

std::string peft_name(const std::string& ours) {
  // model.layers.0.self_attn.q_proj.adapter.lora_A -> base_model.model.model...q_proj.lora_A.weight
  std::string s = ours;
  s.replace(s.find(".adapter."), 9, ".");
  return "base_model.model." + s + ".weight";
}
}  // namespace

TEST(Lora, StartsExactlyAtTheBaseModel) {
  auto base = model::load_llama(kBase, torch::kFloat32);
  auto adapted = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig cfg;
  auto attached = adapters::attach(adapted, cfg);
  EXPECT_EQ(attached.trainable.size(), 2u * 7 * 2);
  // r (in + out) per projection: q 64+64, k 64+32, v 64+32, o 64+64, gate/up 64+176, down 176+64
  EXPECT_EQ(attached.num_trainable(), 2 * 8 * (128 + 96 + 96 + 128 + 240 * 3));
  torch::NoGradGuard no_grad;
  auto ids = golden("input_ids");
  adapted->eval();
  EXPECT_TRUE(torch::equal(base->forward(ids), adapted->forward(ids)));
}

// Golden: the same weights in PEFT 0.10 (LoraConfig r=4, alpha=8, q/v/o/gate/down, dropout 0,
// non-zero B) give the same logits, loss and lora_A / lora_B gradients.
TEST(LoraGolden, ForwardAndGradientsEqualPeft) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig cfg = checkpoints::load_peft_lora(kLora, m);
  EXPECT_EQ(cfg.r, 4);
  EXPECT_DOUBLE_EQ(cfg.alpha, 8.0);
  auto logits = m->forward(golden("input_ids"));
  EXPECT_LE((logits - golden("logits")).abs().max().item<double>(), 1e-5);
  auto loss = model::causal_lm_loss(logits, golden("labels"));
  EXPECT_NEAR(loss.item<double>(), golden("loss").item<double>(), 1e-6);
  loss.backward();
  int checked = 0;
  for (const auto& [name, t] : adapters::trainable_parameters(m)) {
    auto expected = golden("grad." + peft_name(name));
    const double scale = expected.abs().max().item<double>();
    ASSERT_GT(scale, 0.0) << name;
    EXPECT_LE((t.grad() - expected).abs().max().item<double>(), 1e-5 * scale + 1e-8) << name;
    ++checked;
  }
  EXPECT_EQ(checked, 20);
}

TEST(Lora, PeftSaveAndLoadRoundTrip) {
  torch::manual_seed(5);
  auto a = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig cfg;
  cfg.targets = {"k", "up"};
  cfg.r = 3;
  cfg.alpha = 6;
  adapters::attach(a, cfg);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : adapters::trainable_parameters(a)) t.normal_(0, 0.1);
  }
  const std::string dir = testing::TempDir() + "spartan_lora_roundtrip";
  checkpoints::save_peft_lora(dir, a, cfg, kBase);
  auto b = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig back = checkpoints::load_peft_lora(dir, b);
  EXPECT_EQ(back.targets, (std::vector<std::string>{"k", "up"}));
  EXPECT_EQ(back.r, 3);
  torch::NoGradGuard no_grad;
  a->eval();
  b->eval();
  auto ids = golden("input_ids");
  EXPECT_TRUE(torch::equal(a->forward(ids), b->forward(ids)));
}

TEST(Lora, MergedWeightGivesTheAdaptedOutput) {
  torch::manual_seed(6);
  adapters::LoraLinear lora(8, 5, 2, 4.0, 0.0);
  torch::NoGradGuard no_grad;
  lora.lora_B.normal_();
  auto w = torch::randn({5, 8});
  auto x = torch::randn({2, 3, 8});
  auto merged = torch::linear(x, w + lora.delta_weight());
  EXPECT_LE((lora.forward(x, w) - merged).abs().max().item<double>(), 1e-5);
}

TEST(Lora, Bf16BaseKeepsFp32Adapter) {
  auto m = model::load_llama(kBase, torch::kBFloat16);
  adapters::attach(m, AdapterConfig{});
  for (const auto& [name, t] : adapters::trainable_parameters(m))
    EXPECT_EQ(t.scalar_type(), torch::kFloat32) << name;
  auto loss = model::causal_lm_loss(m->forward(golden("input_ids")), golden("labels"));
  loss.backward();
  for (const auto& [name, t] : adapters::trainable_parameters(m)) {
    ASSERT_TRUE(t.grad().defined()) << name;
  }
}

TEST(Lora, UnknownMethodIsAClearError) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig cfg;
  cfg.method = "dora";
  EXPECT_THROW(adapters::attach(m, cfg), UsageError);
}

// The configuration accepts exactly the registered methods, and each one's name finds it again.
TEST(Registry, TheConfigurationAcceptsExactlyTheRegisteredMethods) {
  std::vector<std::string> registered;
  for (const adapters::Method* m : adapters::methods()) {
    registered.push_back(m->name());
    EXPECT_EQ(&adapters::method(m->name()), m);
  }
  EXPECT_EQ(registered, kAdapterMethods);
  EXPECT_EQ(adapters::find_method("dora"), nullptr);
  EXPECT_THROW(adapters::method("dora"), UsageError);
}
