// Activation recomputation per layer (model/recompute.h): the same gradients as keeping every
// activation, for adapters with dropout (the generator is replayed), prefix tuning (gradients
// leave the layers through the prefix), full training and bf16 products; and less memory kept.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "adapters/adapter.h"
#include "common/config.h"
#include "model/llama.h"
#include "parallel/runtime.h"

using namespace spartan;

namespace {

model::LlamaArch arch() {
  model::LlamaArch a;
  a.vocab_size = 64;
  a.hidden_size = 64;
  a.intermediate_size = 128;
  a.num_layers = 3;
  a.num_heads = 4;
  a.num_kv_heads = 2;
  a.max_position_embeddings = 64;
  return a;
}

struct Step {
  double loss = 0;
  model::NamedTensors grads;
};

// One forward and backward pass of `method` from seed 11, with or without recomputation.
Step step(const std::string& method, bool recompute, double dropout, torch::Dtype compute) {
  torch::manual_seed(11);
  model::Llama m(arch(), torch::kFloat32);
  m->init_weights();
  AdapterConfig a;
  a.method = method;
  a.dropout = dropout;
  a.prefix.num_virtual_tokens = 4;
  adapters::attach(m, a);
  m->set_recompute_layers(recompute);
  m->set_compute_dtype(compute);
  m->train();
  const auto ids = torch::randint(64, {2, 16}, torch::kInt64);
  torch::Tensor loss;
  {
    parallel::ComputeScope scope(torch::kCPU, compute);
    loss = m->losses(ids, ids).mean();
  }
  loss.backward();
  Step s;
  s.loss = loss.item<double>();
  for (const auto& [name, p] : adapters::trainable_parameters(m))
    s.grads.emplace_back(name, p.grad().defined() ? p.grad().clone() : torch::Tensor());
  return s;
}

void expect_same(const Step& kept, const Step& rebuilt) {
  EXPECT_EQ(kept.loss, rebuilt.loss);
  ASSERT_EQ(kept.grads.size(), rebuilt.grads.size());
  ASSERT_FALSE(kept.grads.empty());
  for (size_t i = 0; i < kept.grads.size(); ++i) {
    const auto& [name, g] = kept.grads[i];
    ASSERT_TRUE(g.defined()) << name;
    ASSERT_TRUE(rebuilt.grads[i].second.defined()) << name << " got no gradient when recomputed";
    EXPECT_TRUE(torch::equal(g, rebuilt.grads[i].second))
        << name << ": " << (g - rebuilt.grads[i].second).abs().max().item<double>();
  }
}

}  // namespace

// Bit for bit: the recomputed forward draws the same dropout masks and runs the same operations.
TEST(Recompute, LoraWithDropoutGivesTheSameGradients) {
  expect_same(step("lora", false, 0.1, torch::kFloat32), step("lora", true, 0.1, torch::kFloat32));
}

TEST(Recompute, SppAndSoraGiveTheSameGradients) {
  expect_same(step("spp", false, 0.1, torch::kFloat32), step("spp", true, 0.1, torch::kFloat32));
  expect_same(step("sora", false, 0.0, torch::kFloat32), step("sora", true, 0.0, torch::kFloat32));
}

// The prefix's gradient leaves the recomputed layers as an input's gradient.
TEST(Recompute, PrefixTuningGivesTheSameGradients) {
  expect_same(step("prefix", false, 0.0, torch::kFloat32),
              step("prefix", true, 0.0, torch::kFloat32));
}

// Full training: the gradients are those of the layers' own weights.
TEST(Recompute, FullTrainingGivesTheSameGradients) {
  expect_same(step("full", false, 0.0, torch::kFloat32), step("full", true, 0.0, torch::kFloat32));
}

// The recomputed forward runs in the precision of the first one (autocast replayed).
TEST(Recompute, Bf16ProductsGiveTheSameGradients) {
  expect_same(step("lora", false, 0.1, torch::kBFloat16),
              step("lora", true, 0.1, torch::kBFloat16));
}

// The generator continues after the step as it would without recomputation: the backward pass
// rewinds it for the recomputed dropout and puts it back.
TEST(Recompute, LeavesTheGeneratorWhereTheStepLeftIt) {
  step("lora", false, 0.1, torch::kFloat32);
  const auto after_kept = torch::rand({4});
  step("lora", true, 0.1, torch::kFloat32);
  const auto after_rebuilt = torch::rand({4});
  EXPECT_TRUE(torch::equal(after_kept, after_rebuilt));
}

// Training keeps one node per layer in the autograd graph (which holds the layer's input) instead
// of every operation's node and the activations each saves; evaluation (no gradient) takes the
// plain path. The memory this saves is measured in docs/performance.md.
TEST(Recompute, KeepsOneGraphNodePerLayer) {
  torch::manual_seed(12);
  model::Llama m(arch(), torch::kFloat32);
  m->init_weights();
  AdapterConfig a;
  a.dropout = 0.0;
  adapters::attach(m, a);
  const auto ids = torch::randint(64, {2, 32}, torch::kInt64);
  auto graph_nodes = [&](bool recompute) {
    m->set_recompute_layers(recompute);
    int64_t nodes = 0;
    {
      auto h = m->embed(ids);
      auto out = m->run_layers(h);
      std::vector<torch::autograd::Node*> stack{out.grad_fn().get()};
      std::set<torch::autograd::Node*> seen;
      while (!stack.empty()) {
        auto* node = stack.back();
        stack.pop_back();
        if (!node || !seen.insert(node).second) continue;
        for (const auto& edge : node->next_edges()) stack.push_back(edge.function.get());
      }
      nodes = static_cast<int64_t>(seen.size());
    }
    return nodes;
  };
  const int64_t plain = graph_nodes(false), rebuilt = graph_nodes(true);
  EXPECT_LT(rebuilt * 5, plain) << "graph nodes: " << plain << " kept, " << rebuilt << " rebuilt";
  torch::NoGradGuard no_grad;
  m->set_recompute_layers(true);
  EXPECT_FALSE(m->run_layers(m->embed(ids)).requires_grad());
}
