// Generation: greedy tokens equal transformers' generate(do_sample=False) (golden), and the
// KV-cached path equals recomputing the whole sequence for every adapter kind.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "checkpoints/peft.h"
#include "common/config.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "tests/test_paths.h"

using namespace spartan;

namespace {
const std::string kFixtures = spartan::testing_support::fixtures_dir();

std::vector<int64_t> ids(const model::SafetensorsFile& f, const std::string& name) {
  const auto& t = f.at(name);
  const auto* p = reinterpret_cast<const int64_t*>(f.data(t));
  return std::vector<int64_t>(p, p + t.numel());
}
}  // namespace

// Three prompts (1, 7 and 20 tokens after BOS), 16 new tokens or EOS, on the fixture model alone
// and with PEFT's LoRA adapter: the same tokens, with the cache and without.
TEST(GenerateGolden, GreedyEqualsTransformersGenerate) {
  model::SafetensorsFile f(kFixtures + "/generate/golden.safetensors");
  for (const std::string variant : {"base", "lora"}) {
    auto m = model::load_llama(kFixtures + "/tiny-llama-gqa", torch::kFloat32);
    if (variant == "lora") checkpoints::load_peft_lora(kFixtures + "/lora-gqa", m);
    for (int i = 0; i < 3; ++i) {
      const auto expected = ids(f, variant + std::to_string(i));
      for (bool cache : {true, false}) {
        model::GenerateOptions o;
        o.max_new_tokens = 16;
        o.eos_id = 2;
        o.use_cache = cache;
        const auto g = model::generate(m, ids(f, "prompt" + std::to_string(i)), o);
        EXPECT_EQ(g.tokens, expected) << variant << " prompt " << i << (cache ? " cached" : "");
        EXPECT_EQ(g.stopped_at_eos, expected.back() == 2);
      }
    }
  }
}

// bf16 weights and compute (Spartan's --dtype bf16): transformers' bf16 greedy tokens (eager
// attention) on three prompts whose 32 tokens differ from fp32's after a few steps, so the test
// tells a bf16 path from an fp32 one.
TEST(GenerateGolden, Bf16GreedyEqualsTransformersBf16) {
  model::SafetensorsFile f(kFixtures + "/generate/golden.safetensors");
  auto m = model::load_llama(kFixtures + "/tiny-llama-gqa", torch::kBFloat16);
  for (int i = 0; i < 3; ++i) {
    const std::string n = std::to_string(i);
    const auto expected = ids(f, "bf16_base" + n);
    ASSERT_NE(expected, ids(f, "bf16_fp32_" + n)) << "the fixture's prompt " << i;
    for (bool cache : {true, false}) {
      model::GenerateOptions o;
      o.max_new_tokens = 32;
      o.eos_id = 2;
      o.use_cache = cache;
      const auto g = model::generate(m, ids(f, "bf16_prompt" + n), o);
      EXPECT_EQ(g.tokens, expected) << "prompt " << i << (cache ? " cached" : "");
    }
  }
}

// Feeding a sequence in pieces through the KV cache gives the logits of feeding it whole, with
// every kind of adapter that touches attention's inputs: projections (LoRA, (IA)^3), virtual
// tokens in front (prompt tuning), prefix keys and values (prefix tuning), a per-token block
// (Houlsby). Pieces of 5, 1, 1 and 3 tokens.
TEST(Generate, KvCacheEqualsRecomputing) {
  torch::manual_seed(0);
  const auto sequence = torch::randint(3, 101, {1, 10}, torch::kInt64);
  for (const std::string method : {"none", "lora", "ia3", "prompt", "prefix", "houlsby"}) {
    auto m = model::load_llama(kFixtures + "/tiny-llama-gqa", torch::kFloat32);
    if (method != "none") {
      AdapterConfig a;
      a.method = method;
      a.prompt.num_virtual_tokens = 4;
      a.prefix.num_virtual_tokens = 3;
      adapters::attach(m, a);
      torch::NoGradGuard no_grad;
      for (auto& [name, p] : adapters::trainable_parameters(m)) p.add_(torch::randn_like(p) * 0.1);
    }
    ASSERT_TRUE(m->supports_kv_cache()) << method;
    m->eval();
    torch::NoGradGuard no_grad;
    const auto whole = m->forward(sequence);
    model::KvCache cache;
    int64_t at = 0;
    for (int64_t piece : {5, 1, 1, 3}) {
      const auto logits = m->forward(sequence.narrow(1, at, piece), &cache);
      const double diff = (logits - whole.narrow(1, at, piece)).abs().max().item<double>();
      EXPECT_LE(diff, 1e-5) << method << ", positions " << at << " to " << at + piece;
      at += piece;
    }
    EXPECT_EQ(cache.positions, 10 + (method == "prompt" ? 4 : 0)) << method;
  }
}

// Tiny attention mixes positions: the model says the cache cannot serve it, and generate
// recomputes (the same tokens as without a cache).
TEST(Generate, TinyAttentionRecomputes) {
  auto m = model::load_llama(kFixtures + "/tiny-llama-gqa", torch::kFloat32);
  AdapterConfig a;
  a.method = "tiny_attention";
  adapters::attach(m, a);
  EXPECT_FALSE(m->supports_kv_cache());
  model::GenerateOptions o;
  o.max_new_tokens = 6;
  const auto cached = model::generate(m, {1, 5, 9}, o);
  o.use_cache = false;
  EXPECT_EQ(model::generate(m, {1, 5, 9}, o).tokens, cached.tokens);
}

// Sampling is reproducible by seed, top-k 1 is greedy, and a prompt longer than the positions is
// cut from the left keeping BOS.
TEST(Generate, SamplingAndLongPrompts) {
  auto m = model::load_llama(kFixtures + "/tiny-llama-gqa", torch::kFloat32);
  model::GenerateOptions o;
  o.max_new_tokens = 8;
  const auto greedy = model::generate(m, {1, 7, 8}, o);
  o.temperature = 1.0;
  o.seed = 5;
  const auto a = model::generate(m, {1, 7, 8}, o), b = model::generate(m, {1, 7, 8}, o);
  EXPECT_EQ(a.tokens, b.tokens);
  o.seed = 6;
  EXPECT_NE(model::generate(m, {1, 7, 8}, o).tokens, a.tokens);
  o.top_k = 1;
  EXPECT_EQ(model::generate(m, {1, 7, 8}, o).tokens, greedy.tokens);
  o.top_k = 0;
  o.top_p = 1e-6;  // only the most likely token survives
  EXPECT_EQ(model::generate(m, {1, 7, 8}, o).tokens, greedy.tokens);
  std::vector<int64_t> long_prompt(100, 9);
  long_prompt[0] = 1;
  o = {};
  o.max_new_tokens = 8;
  const auto cut = model::generate(m, long_prompt, o);  // 64 positions: 56 prompt tokens kept
  EXPECT_EQ(cut.prompt_tokens, 56);
  EXPECT_EQ(cut.cut_tokens, 44);
  EXPECT_EQ(cut.tokens.size(), 8u);
}
