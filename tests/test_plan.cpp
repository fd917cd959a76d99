// spartan plan's arithmetic: LLaMA-2-70B's published sizes (bf16 base, 2:4-compressed base, SPP's
// trainable entries), the activations against Megatron's formula, stage splits, traffic, the
// suggestion of layouts, refusals. The traffic is also checked against measured bytes in
// tests/test_parallel.cpp, the activations against measured memory in tests/test_trainer.cpp.
#include <gtest/gtest.h>

#include <numeric>

#include "adapters/method.h"
#include "common/error.h"
#include "model/plan.h"
#include "tests/llama_shapes.h"

using namespace spartan;
using model::PlanInputs;

namespace {

// A method's costs at the configuration's defaults (and SPP's effective form).
std::shared_ptr<const model::MethodCosts> costs(const std::string& method,
                                                const std::string& merge = "") {
  AdapterConfig c;
  c.method = method;
  if (!merge.empty()) c.merge = *option_named<MergeForm>(merge);
  return adapters::method(method).costs(c);
}

// Bytes of the base over the whole model: each stage's rank times tp.
double whole_base(const model::Plan& p) {
  double sum = 0;
  for (const auto& s : p.stages) sum += s.base * double(p.in.tp);
  return sum;
}

PlanInputs spp_70b() {
  PlanInputs in;
  in.arch = testing_support::llama2_70b();
  in.method = costs("spp");
  in.r = 16;
  in.base_bytes = 2;
  in.tp = 8;
  in.pp = 4;
  in.dp = 2;
  in.seq_len = 1024;
  in.micro_batch = 1;
  in.global_batch = 128;
  return in;
}

}  // namespace

// The published arithmetic: bf16 base ≈ 138 GB dense, ≈ 78 GB 2:4-compressed; SPP with
// r = 16 on all seven projections ≈ 106M trainable entries.
TEST(Plan, Llama2_70bSizes) {
  PlanInputs in = spp_70b();
  const auto dense = model::make_plan(in);
  EXPECT_NEAR(dense.base_parameters, double(in.arch.num_parameters()), 1.0);
  EXPECT_NEAR(dense.base_parameters / 1e9, 68.98, 0.01);
  EXPECT_NEAR(whole_base(dense) / 1e9, 137.95, 0.05);
  in.sparse_base = true;
  const auto sparse = model::make_plan(in);
  EXPECT_NEAR(whole_base(sparse) / 1e9, 78.1, 0.2);
  EXPECT_NEAR(dense.trainable_entries / 1e6, 106.3, 0.1);
  // Per rank: the whole trainable set over the stages and TP, with W_α or W_β replicated.
  double local = 0;
  for (const auto& s : dense.stages) local += s.trainable_entries;
  EXPECT_GT(local * in.tp, dense.trainable_entries);
  EXPECT_EQ(dense.stages.size(), 4u);
  for (const auto& s : dense.stages) EXPECT_EQ(s.layers, 20);
  EXPECT_EQ(dense.stages[0].in_flight, 4);
  EXPECT_EQ(dense.stages[3].in_flight, 1);
  EXPECT_EQ(dense.stages[3].logits > 0, true);
  EXPECT_EQ(dense.stages[0].logits, 0);
}

// Megatron's count (Korthikanti et al. 2022), 34·s·b·h + 5·a·s²·b bytes a layer without TP, is
// 1.91 GB for 70B at sequence 2048: it keeps the softmax's input and a dropout mask. Spartan's
// layer keeps the fp32 softmax output and its bf16 cast instead (no dropout, no softmax input),
// its SwiGLU MLP is 3.5h wide with four saved tensors, and its LoRA modules each keep an fp32
// copy of their bf16 input: about 3.05 GB here, most of it in the softmax and the MLP.
TEST(Plan, ActivationsAgainstMegatronsFormula) {
  PlanInputs in = spp_70b();
  in.method = costs("lora");
  in.tp = in.pp = in.dp = 1;
  in.seq_len = 2048;
  in.global_batch = 1;
  const double s = 2048, h = 8192, a = 64;
  const double megatron = 34 * s * h + 5 * a * s * s;
  EXPECT_NEAR(megatron / 1e9, 1.91, 0.01);
  in.r = 8;
  const auto p = model::make_plan(in);
  // By hand: the norms' fp32 copies 2·4sh and their bf16 outputs 2·2sh, q after RoPE, k and v
  // repeated 2s·3h, o's input 2sh, the softmax (4 + 2)·a·s², the MLP 4·2s·I; LoRA's fp32 x·Aᵀ
  // 7·4·s·r and the fp32 copies of its inputs 4s(6h + I) (q, k, v, gate, up and o take h wide
  // inputs, down I).
  const double I = 28672, r = 8;
  const double mine = 8 * s * h + 4 * s * h + 6 * s * h + 2 * s * h + 6 * a * s * s + 8 * s * I +
                      28 * s * r + 4 * s * (6 * h + I);
  EXPECT_DOUBLE_EQ(p.activation_per_layer, mine);
  EXPECT_NEAR(p.activation_per_layer / 1e9, 3.05, 0.01);
  EXPECT_GT(p.activation_per_layer, megatron);
}

// Tensor parallelism divides what it splits; the embedding sits on stage 0, the head on the last.
TEST(Plan, TensorParallelismSplitsTheShardedParts) {
  PlanInputs in = spp_70b();
  in.pp = 1;
  in.dp = 1;
  in.global_batch = 8;
  in.tp = 1;
  const auto one = model::make_plan(in);
  in.tp = 8;
  const auto eight = model::make_plan(in);
  const double norms = (80 * 2 + 1) * 8192 * 2.0;  // replicated over TP
  EXPECT_NEAR(eight.stages[0].base - norms, (one.stages[0].base - norms) / 8, 1.0);
  const double final_norm = 4.0 * 1024 * 8192;  // its fp32 copy, replicated
  EXPECT_NEAR(eight.stages[0].logits - final_norm, (one.stages[0].logits - final_norm) / 8, 1.0);
  EXPECT_LT(eight.stages[0].activations, one.stages[0].activations / 2);
  EXPECT_EQ(one.stages[0].tp_bytes, 0);
  EXPECT_GT(eight.stages[0].tp_bytes, 0);
}

// The shipped configuration's layout fits 80 GB GPUs with a margin; without PP it does not.
TEST(Plan, SuggestsLayoutsThatFit) {
  PlanInputs in = spp_70b();
  const auto p = model::make_plan(in);
  EXPECT_LT(p.largest().total(), 80e9 * 0.9);
  in.tp = 1;
  in.pp = 1;
  in.dp = 64;
  EXPECT_GT(model::make_plan(in).largest().total(), 80e9);  // the whole bf16 base alone: 138 GB
  const auto choices = model::suggest_layouts(spp_70b(), 64, 8, 80e9, 989e12, 0.4, 450e9, 50e9);
  ASSERT_FALSE(choices.empty());
  for (const auto& c : choices) {
    EXPECT_EQ(c.tp * c.pp * c.dp, 64);
    EXPECT_LE(c.tp, 8);
    EXPECT_LE(c.peak_bytes, 80e9);
  }
  for (size_t i = 1; i < choices.size(); ++i)
    EXPECT_LE(choices[i - 1].step_seconds(), choices[i].step_seconds());
}

// FLOPs: SPP's weight gradient is the targeted projections' m×n products; LoRA's is small.
TEST(Plan, SppPaysForItsEffectiveWeightsGradient) {
  PlanInputs in = spp_70b();
  in.dropout = 0;
  const auto spp = model::make_plan(in);
  in.method = costs("lora");
  const auto lora = model::make_plan(in);
  in.method = costs("full");
  const auto full = model::make_plan(in);
  EXPECT_GT(spp.flops_weight_grad, 0.95 * full.flops_weight_grad);
  EXPECT_LT(lora.flops_weight_grad, 0.01 * full.flops_weight_grad);
  EXPECT_NEAR(spp.flops_forward, full.flops_forward, 1e-9 * full.flops_forward);
}

// Full training that keeps the base's zeros adds a byte per targeted entry of the rank's layers
// (the masks) and nothing else.
TEST(Plan, MaskedFullTrainingHoldsAByteAMaskedEntry) {
  PlanInputs in = spp_70b();
  in.method = costs("full");
  in.targets = {"q", "down"};
  const auto plain = model::make_plan(in);
  in.method = costs("full", "masked");
  const auto masked = model::make_plan(in);
  const double h = 8192, I = 28672, q = 64 * 128;  // LLaMA-2-70B
  for (size_t st = 0; st < masked.stages.size(); ++st) {
    const auto& a = plain.stages[st];
    const auto& b = masked.stages[st];
    const double masks = double(b.layers) * (q * h + h * I) / double(in.tp);
    EXPECT_NEAR(b.trainable - a.trainable, masks, 1e-9 * masks) << "stage " << st;
    EXPECT_EQ(b.activations, a.activations);
    EXPECT_EQ(b.trainable_entries, a.trainable_entries);
  }
}

TEST(Plan, RefusesWhatItDoesNotModel) {
  PlanInputs in = spp_70b();
  EXPECT_EQ(costs("prefix"), nullptr);  // not modelled: `spartan plan` refuses it
  in.method = nullptr;
  EXPECT_THROW(model::make_plan(in), UsageError);
  in = spp_70b();
  in.tp = 3;
  EXPECT_THROW(model::make_plan(in), UsageError);
  in = spp_70b();
  in.global_batch = 101;  // not a multiple of micro_batch x dp
  EXPECT_THROW(model::make_plan(in), UsageError);
}
