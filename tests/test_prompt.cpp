// Prompt tuning: forward and the prompt's gradient equal HF PEFT's PromptTuningConfig (golden),
// parameter count, PEFT round trip.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adapter.h"
#include "adapters/prompt.h"
#include "checkpoints/peft.h"
#include "model/llama.h"
#include "test_support.h"
#include "tests/test_paths.h"

using namespace spartan;

namespace {
const std::string kBase = spartan::testing_support::fixtures_dir() + "/tiny-llama-gqa";
const std::string kPrompt = spartan::testing_support::fixtures_dir() + "/prompt-gqa";
torch::Tensor golden(const std::string& name) {
  return testing_support::golden_tensor(kPrompt + "/golden.safetensors", name);
}
}  // namespace

// Golden: PEFT 0.10, 5 virtual tokens, random prompt; logits of the real tokens, loss (labels of
// the first two tokens masked) and the prompt's gradient.
TEST(PromptGolden, ForwardAndGradientEqualPeft) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig cfg = checkpoints::load_peft_adapter(kPrompt, m);
  EXPECT_EQ(cfg.method, "prompt");
  EXPECT_EQ(cfg.prompt.num_virtual_tokens, 5);
  auto logits = m->forward(golden("input_ids"));
  ASSERT_EQ(logits.sizes(), golden("logits").sizes());
  EXPECT_LE((logits - golden("logits")).abs().max().item<double>(), 1e-5);
  auto loss = model::causal_lm_loss(logits, golden("labels"));
  EXPECT_NEAR(loss.item<double>(), golden("loss").item<double>(), 1e-6);
  loss.backward();
  auto params = adapters::trainable_parameters(m);
  ASSERT_EQ(params.size(), 1u);
  auto expected = golden("grad.prompt_embeddings");
  EXPECT_LE((params[0].second.grad() - expected).abs().max().item<double>(),
            1e-5 * expected.abs().max().item<double>());
}

TEST(Prompt, CountsAndRoundTrip) {
  auto m = model::load_llama(kBase, torch::kFloat32);
  AdapterConfig c;
  c.method = "prompt";
  c.prompt.num_virtual_tokens = 7;
  EXPECT_EQ(adapters::attach(m, c).num_trainable(), 7 * 64);
  const std::string dir = testing::TempDir() + "spartan_prompt_roundtrip";
  checkpoints::save_peft_prompt(dir, m, kBase);
  auto back = model::load_llama(kBase, torch::kFloat32);
  checkpoints::load_peft_adapter(dir, back);
  torch::NoGradGuard no_grad;
  auto ids = golden("input_ids");
  EXPECT_TRUE(torch::equal(m->forward(ids), back->forward(ids)));
}
