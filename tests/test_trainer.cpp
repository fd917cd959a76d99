// Trainer: AdamW against torch.optim.AdamW, schedule values, clipping, token-weighted loss,
// NaN handling, and short runs that lower the held-out loss.
#include <gtest/gtest.h>
#include <malloc.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "adapters/adapter.h"
#include "adapters/method.h"
#include "checkpoints/checkpoint.h"
#include "common/error.h"
#include "common/memory_use.h"
#include "data/dataset.h"
#include "model/inspect.h"
#include "model/llama.h"
#include "model/plan.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "tests/test_paths.h"
#include "tests/trainer_support.h"
#include "trainer/eval.h"
#include "trainer/optimizer.h"
#include "trainer/process.h"
#include "trainer/run_log.h"
#include "trainer/schedule.h"
#include "trainer/sora_gates.h"
#include "trainer/tensorboard.h"
#include "trainer/trainer.h"

using namespace spartan;
using testing_support::synthetic_rows;
using testing_support::tiny;

namespace {

torch::Tensor fixture(const model::SafetensorsFile& f, const std::string& name) {
  return model::read_tensor(f, name, torch::kFloat64);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The one event file of a run's tb/ folder.
std::string tensorboard_file(const std::string& run) {
  const auto names = trainer::event_files(run + "/tb");
  EXPECT_EQ(names.size(), 1u);
  return run + "/tb/" + (names.empty() ? "" : names.front());
}

std::string run_dir(const std::string& name) {
  std::string d = testing::TempDir() + "spartan_trainer_" + name;
  std::system(("rm -rf " + d + " && mkdir -p " + d).c_str());
  return d;
}

}  // namespace

// Golden: SoRA's gates through 40 steps of the official SparseAdamW, restated in
// tests/golden/make_optim_fixtures.py: linear warmup whose first step is at lr 0 (only the
// threshold acts: 0.0015 -> 0.0005 -> 0 by the three-line quirk), gradients of 1e-5, 1e-4 and
// 1e-3. The "hf" form follows it after every step within fp32 rounding; torch's form does not
// (the test could fail).
TEST(SoraGateOptimizerGolden, MatchesTheOfficialSparseAdamW) {
  model::SafetensorsFile f(spartan::testing_support::fixtures_dir() +
                           "/sora-gates/golden.safetensors");
  const auto lrs = fixture(f, "lrs");
  const int64_t steps = lrs.size(0);
  const auto schedule = trainer::Schedule::make(5e-3, steps, 0.2, LrScheduleKind::linear, 0.0);
  for (int64_t s = 0; s < steps; ++s)
    EXPECT_NEAR(schedule.lr(s), lrs[s].item<double>(), 1e-12) << "step " << s;
  EXPECT_EQ(schedule.lr(0), 0.0);

  double worst_hf = 0, worst_torch = 0;
  for (auto form : {trainer::AdamWOptions::Form::hf, trainer::AdamWOptions::Form::torch}) {
    model::NamedTensors gates;
    for (int i = 0; i < 3; ++i)
      gates.push_back({"g" + std::to_string(i),
                       fixture(f, "g" + std::to_string(i) + ".init").to(torch::kFloat32)});
    trainer::GateOptimizer opt(gates, 1e-3, GateThreshold::official, 0.9, 0.999, form);
    double& worst = form == trainer::AdamWOptions::Form::hf ? worst_hf : worst_torch;
    for (int64_t s = 0; s < steps; ++s) {
      for (int i = 0; i < 3; ++i)
        gates[i].second.mutable_grad() =
            fixture(f, "grad" + std::to_string(s) + ".g" + std::to_string(i)).to(torch::kFloat32);
      opt.step(lrs[s].item<double>());
      for (int i = 0; i < 3; ++i) {
        const auto expected = fixture(f, "g" + std::to_string(i) + ".after" + std::to_string(s));
        // Relative to the gate's size (fp32 rounding), at least 1e-9 absolute.
        const double err =
            ((gates[i].second.to(torch::kFloat64) - expected).abs() / (expected.abs() + 1e-3))
                .max()
                .item<double>();
        worst = std::max(worst, err);
      }
      if (s == 0 && form == trainer::AdamWOptions::Form::hf) {
        EXPECT_EQ(gates[0].second[1].item<float>(), 0.0f) << "the three-line threshold quirk";
      }
    }
  }
  std::printf("largest relative gate difference to the official step: hf %.2e, torch %.2e\n",
              worst_hf, worst_torch);
  EXPECT_LE(worst_hf, 1e-5);
  EXPECT_GE(worst_torch, 1e-3) << "torch's form followed the official one: the test is blind";
}

// Golden: 7 fp32 steps of torch.optim.AdamW with a changing lr (one step at lr 0, one with
// 10x gradients), weight decay 0.1, betas (0.9, 0.95): parameters and moments within 1e-7
// (measured: equal to the last bit).
TEST(AdamWGolden, MatchesTorchOptimAdamW) {
  model::SafetensorsFile f(spartan::testing_support::fixtures_dir() + "/adamw/golden.safetensors");
  {
    const auto dtype = torch::kFloat32;
    model::NamedTensors params = {{"p0", fixture(f, "p0.init").to(dtype)},
                                  {"p1", fixture(f, "p1.init").to(dtype)}};
    trainer::AdamW opt(params, {true, true}, {0.9, 0.95, 1e-8, 0.1});
    auto lrs = fixture(f, "lrs");
    for (int64_t s = 0; s < lrs.size(0); ++s) {
      for (int i = 0; i < 2; ++i)
        params[i].second.mutable_grad() =
            fixture(f, "grad" + std::to_string(s) + ".p" + std::to_string(i)).to(dtype);
      opt.step(lrs[s].item<double>());
    }
    EXPECT_EQ(opt.steps(), 7);
    for (int i = 0; i < 2; ++i) {
      const std::string p = "p" + std::to_string(i);
      EXPECT_LE((params[i].second.to(torch::kFloat64) - fixture(f, p + ".final"))
                    .abs()
                    .max()
                    .item<double>(),
                1e-7)
          << p;
      EXPECT_LE((opt.exp_avg()[i].to(torch::kFloat64) - fixture(f, p + ".exp_avg"))
                    .abs()
                    .max()
                    .item<double>(),
                1e-7)
          << p;
      EXPECT_LE((opt.exp_avg_sq()[i].to(torch::kFloat64) - fixture(f, p + ".exp_avg_sq"))
                    .abs()
                    .max()
                    .item<double>(),
                1e-6)
          << p;
    }
  }
}

TEST(Schedule, WarmupThenCosineOrLinear) {
  auto cos = trainer::Schedule::make(1.0, 100, 0.1, LrScheduleKind::cosine, 0.0);
  EXPECT_EQ(cos.warmup_steps, 10);
  EXPECT_DOUBLE_EQ(cos.lr(0), 0.0);
  EXPECT_DOUBLE_EQ(cos.lr(5), 0.5);
  EXPECT_DOUBLE_EQ(cos.lr(10), 1.0);
  EXPECT_NEAR(cos.lr(55), 0.5, 1e-12);  // halfway through the decay
  EXPECT_NEAR(cos.lr(100), 0.0, 1e-12);
  auto lin = trainer::Schedule::make(2.0, 10, 0.03, LrScheduleKind::linear, 0.0);
  EXPECT_EQ(lin.warmup_steps, 1);  // ceil(0.3)
  EXPECT_DOUBLE_EQ(lin.lr(1), 2.0);
  EXPECT_NEAR(lin.lr(4), 2.0 * (1 - 3.0 / 9.0), 1e-12);
  auto floor = trainer::Schedule::make(1.0, 10, 0.0, LrScheduleKind::cosine, 0.1);
  EXPECT_NEAR(floor.lr(10), 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(trainer::Schedule::make(3.0, 10, 0.0, LrScheduleKind::constant, 0.0).lr(7), 3.0);
}

TEST(Clipping, ScalesToTheMaxNorm) {
  model::NamedTensors params = {{"a", torch::zeros({2})}, {"b", torch::zeros({1})}};
  params[0].second.mutable_grad() = torch::tensor({3.0f, 0.0f});
  params[1].second.mutable_grad() = torch::tensor({4.0f});
  EXPECT_NEAR(trainer::clip_grad_norm(params, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(params[0].second.grad()[0].item<double>(), 3.0 / 5.0, 1e-6);
  EXPECT_NEAR(params[1].second.grad()[0].item<double>(), 4.0 / 5.0, 1e-6);
  EXPECT_NEAR(trainer::clip_grad_norm(params, 10.0), 1.0, 1e-5);  // under the limit: unchanged
  EXPECT_NEAR(params[1].second.grad()[0].item<double>(), 4.0 / 5.0, 1e-6);
}

TEST(Trainer, MicroBatchSplitDoesNotChangeTheStep) {
  auto rows = synthetic_rows(16, 12, 50);
  data::Sequences none;
  std::vector<std::vector<double>> losses(2);
  std::vector<model::NamedTensors> finals;
  for (int variant = 0; variant < 2; ++variant) {
    torch::manual_seed(3);
    model::Llama m(tiny(50), torch::kFloat32);
    m->init_weights();
    Config c;
    c.adapter.dropout = 0.0;
    c.optim.global_batch_size = 8;
    c.optim.micro_batch_size = variant == 0 ? 8 : 2;
    c.optim.max_steps = 3;
    c.run.log_every = 100;
    adapters::attach(m, c.adapter);
    trainer::Trainer t(c, m, rows, none, run_dir("microbatch"));
    t.on_step = [&](int64_t, double loss) { losses[variant].push_back(loss); };
    t.run();
    finals.push_back(adapters::trainable_parameters(m));
  }
  ASSERT_EQ(losses[0].size(), 3u);
  for (int s = 0; s < 3; ++s) EXPECT_NEAR(losses[0][s], losses[1][s], 1e-5);
  for (size_t i = 0; i < finals[0].size(); ++i)
    EXPECT_LE((finals[0][i].second - finals[1][i].second).abs().max().item<double>(), 1e-5)
        << finals[0][i].first;
}

namespace {
// A tiny model whose layer 0 value projection returns NaN: every loss is NaN.
model::Llama poisoned_model() {
  struct Poison : model::LinearAdapter {
    torch::Tensor w;
    Poison() { w = register_parameter("w", torch::ones({1})); }
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight) override {
      return torch::linear(x, weight) * w * std::numeric_limits<float>::quiet_NaN();
    }
  };
  model::Llama m(tiny(50), torch::kFloat32);
  m->init_weights();
  m->projection(0, model::Proj::v)->attach(std::make_shared<Poison>());
  return m;
}
}  // namespace

TEST(Trainer, NonFiniteLossesAreSkippedThenStopTheRun) {
  auto rows = synthetic_rows(8, 8, 50);
  data::Sequences none;
  model::Llama m = poisoned_model();
  Config c;
  c.optim.global_batch_size = 4;
  c.optim.max_steps = 10;
  c.optim.max_bad_steps = 3;
  c.run.log_every = 100;
  trainer::Trainer t(c, m, rows, none, run_dir("nan"));
  int steps = 0;
  t.on_step = [&](int64_t, double loss) {
    EXPECT_TRUE(std::isnan(loss));
    ++steps;
  };
  try {
    t.run();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 non-finite losses in a row"), std::string::npos);
  }
  EXPECT_EQ(steps, 2);  // the third throws before reporting
}

// A checkpoint saved after a non-finite step holds "loss": "nan" (JSON has no NaN); it resumes.
TEST(Trainer, CheckpointAfterANonFiniteStepResumes) {
  auto rows = synthetic_rows(8, 8, 50);
  data::Sequences none;
  model::Llama m = poisoned_model();
  Config c;
  c.optim.global_batch_size = 4;
  c.optim.max_steps = 2;
  c.optim.max_bad_steps = 5;
  c.checkpoint.every = 1;
  c.run.log_every = 100;
  const std::string dir = run_dir("nan_resume");
  {
    trainer::Trainer first(c, m, rows, none, dir);
    first.enable_checkpoints(nlohmann::json::object(), {});
    first.run();
  }
  const std::string saved = checkpoints::latest(dir);
  ASSERT_FALSE(saved.empty());
  EXPECT_EQ(checkpoints::Checkpoint(saved).manifest()["state"]["loss"], "nan");
  c.optim.max_steps = 3;
  trainer::Trainer resumed(c, m, rows, none, dir);
  resumed.enable_checkpoints(nlohmann::json::object(), {});
  resumed.resume_from(saved);
  int steps = 0;
  resumed.on_step = [&](int64_t, double) { ++steps; };
  EXPECT_NO_THROW(resumed.run());
  EXPECT_EQ(steps, 1);  // step 3 only: steps 1 and 2 came from the checkpoint
}

// A short run on real instruction data (../shared/data) lowers the held-out loss (full
// fine-tuning of a small random model: it learns the token statistics of the responses).
TEST(Trainer, ShortRunOnAlpacaLowersHeldOutLoss) {
  const std::string path = spartan::testing_support::shared_data_dir() + "/alpaca_en_demo.json";
  if (!std::ifstream(path)) GTEST_SKIP() << "needs the shared test data at " << path;
  model::Tokenizer tok(spartan::testing_support::fixtures_dir() + "/tokenizer/tokenizer.model");
  auto split = data::load_data(path, "auto", tok, 128, true, 0.05, 1);
  torch::manual_seed(11);
  model::Llama m(tiny(tok.vocab_size()), torch::kFloat32);
  m->init_weights();
  Config c;
  c.adapter.method = "full";
  c.optim.lr = 3e-3;
  c.optim.global_batch_size = 8;
  c.optim.micro_batch_size = 4;
  c.optim.max_steps = 25;
  c.optim.warmup_ratio = 0.1;
  c.run.log_every = 5;
  adapters::attach(m, c.adapter);
  const double before = trainer::evaluate_rows(m, split.held_out, 8).loss;
  const std::string dir = run_dir("alpaca");
  trainer::Trainer t(c, m, split.train, split.held_out, dir);
  auto summary = t.run();
  const double after = trainer::evaluate_rows(m, split.held_out, 8).loss;
  EXPECT_EQ(summary.steps, 25);
  EXPECT_EQ(summary.skipped_steps, 0);
  EXPECT_LT(after, before - 0.5) << before << " -> " << after;
  std::ifstream metrics(dir + "/metrics.jsonl");
  int records = 0;
  for (std::string line; std::getline(metrics, line);) ++records;
  EXPECT_EQ(records, 5);  // one per log_every steps
}

// LoRA alone (frozen base) fits a small set: the training loss falls.
TEST(Trainer, LoraFitsASmallSet) {
  auto rows = synthetic_rows(8, 16, 50);
  data::Sequences none;
  torch::manual_seed(4);
  model::Llama m(tiny(50), torch::kFloat32);
  m->init_weights();
  Config c;
  c.adapter.dropout = 0.0;
  c.optim.lr = 1e-2;
  c.optim.schedule = LrScheduleKind::constant;
  c.optim.global_batch_size = 8;
  c.optim.max_steps = 30;
  c.run.log_every = 100;
  auto attached = adapters::attach(m, c.adapter);
  const auto base_before = m->projection(0, model::Proj::q)->weight.clone();
  std::vector<double> losses;
  trainer::Trainer t(c, m, rows, none, run_dir("lora_fit"));
  t.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
  t.run();
  EXPECT_LT(losses.back(), losses.front() - 1.0) << losses.front() << " -> " << losses.back();
  EXPECT_TRUE(torch::equal(base_before, m->projection(0, model::Proj::q)->weight));  // frozen
}

// Full training with adapter.merge = "masked" keeps every base zero of the targeted projections
// bit for bit while the other weights train; without it the same run fills the zeros in.
TEST(Trainer, MaskedFullTrainingKeepsTheBaseZeros) {
  auto rows = synthetic_rows(8, 16, 50);
  data::Sequences none;
  auto run = [&](const std::string& merge, torch::Tensor* q_before, int64_t* zeros_before) {
    torch::manual_seed(4);
    model::Llama m(tiny(50), torch::kFloat32);
    m->init_weights();
    {
      torch::NoGradGuard no_grad;  // half of q and down pruned; k left dense
      for (int64_t l = 0; l < 2; ++l) {
        auto& q = m->projection(l, model::Proj::q)->weight;
        q.masked_fill_(q.abs() < q.abs().median(), 0.0);
        auto& down = m->projection(l, model::Proj::down)->weight;
        down.masked_fill_(down.abs() < down.abs().median(), 0.0);
      }
    }
    *q_before = m->projection(1, model::Proj::q)->weight.clone();
    *zeros_before = model::projection_zeros(m, {model::Proj::q, model::Proj::down}).zeros;
    Config c;
    c.adapter.method = "full";
    c.adapter.merge = *option_named<MergeForm>(merge);
    c.adapter.targets = {"q", "down"};
    c.optim.lr = 1e-2;
    c.optim.weight_decay = 0.1;  // decay must not move a zero either
    c.optim.global_batch_size = 8;
    c.optim.max_steps = 5;
    c.run.log_every = 100;
    adapters::attach(m, c.adapter);
    trainer::Trainer t(c, m, rows, none, run_dir("full_" + merge));
    t.run();
    return m;
  };
  torch::Tensor before, dense_before;
  int64_t zeros = 0, dense_zeros = 0;
  auto masked = run("masked", &before, &zeros);
  auto dense = run("dense", &dense_before, &dense_zeros);
  EXPECT_GT(zeros, 0);
  const auto q = masked->projection(1, model::Proj::q)->weight;
  EXPECT_TRUE(torch::equal(q.eq(0), before.eq(0)));
  EXPECT_EQ(model::projection_zeros(masked, {model::Proj::q, model::Proj::down}).zeros, zeros);
  EXPECT_GT((q - before).abs().max().item<double>(), 1e-4);  // the kept entries trained
  EXPECT_EQ(dense->projection(1, model::Proj::q)->weight.eq(0).sum().item<int64_t>(), 0);
  EXPECT_EQ(adapters::method("full").display_name(Config().adapter), "full");
  AdapterConfig a;
  a.method = "full";
  a.merge = MergeForm::masked;
  EXPECT_EQ(adapters::method("full").display_name(a), "full*");
}

TEST(Eval, StreamScoresEveryTokenOnceWhateverTheStride) {
  torch::manual_seed(2);
  model::Llama m(tiny(50), torch::kFloat32);
  m->init_weights();
  std::vector<int64_t> tokens;
  for (int i = 0; i < 53; ++i) tokens.push_back((i * 13) % 50);
  auto full = trainer::evaluate_stream(m, tokens, 53, 53, 4);
  auto windows = trainer::evaluate_stream(m, tokens, 16, 16, 4);
  auto strided = trainer::evaluate_stream(m, tokens, 16, 8, 3);
  EXPECT_EQ(full.tokens, 52);
  EXPECT_EQ(windows.tokens, 52 - 3);  // windows start at 0, 16, 32, 48: their first tokens are
                                      // context only
  EXPECT_EQ(strided.tokens, 52);      // overlapping windows give every target context
  // With the whole sequence in one window, the result equals the plain loss.
  torch::NoGradGuard no_grad;
  auto t = torch::tensor(tokens).view({1, -1});
  EXPECT_NEAR(full.loss, model::causal_lm_loss(m->forward(t), t).item<double>(), 1e-6);
  EXPECT_THROW(trainer::evaluate_stream(m, tokens, 16, 17, 1), UsageError);
}

// The xi lists of the official SparseAdamW (numpy's linspace, log and exp), and the phases.
TEST(SoraSchedule, ValuesAsTheOfficialCodeAndPhasesSplitTheRun) {
  using trainer::XiSchedule;
  const std::vector<double> linear{0.1, 0.2, 0.3, 0.4, 0.5};
  const XiSchedule lin(XiScheduleKind::linear, 0.1, 0.5, 5, 10);
  ASSERT_EQ(lin.values().size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(lin.values()[i], linear[i], 1e-12);
  const XiSchedule ex(XiScheduleKind::exp_linear, 1e-3, 1e-1, 3, 9);
  EXPECT_NEAR(ex.values()[1], 1e-2, 1e-12);
  const XiSchedule lg(XiScheduleKind::log_linear, 0.0, 1.0, 3, 9);
  EXPECT_NEAR(lg.values()[1], std::log((1.0 + std::exp(1.0)) / 2), 1e-12);
  EXPECT_NEAR(lg.values()[2], 1.0, 1e-12);
  // 10 steps, 5 values: 2 steps per phase.
  EXPECT_EQ(lin.xi(0), lin.values()[0]);
  EXPECT_EQ(lin.xi(2), lin.values()[1]);
  EXPECT_EQ(lin.xi(9), lin.values()[4]);
  EXPECT_TRUE(lin.phase_ends(1));
  EXPECT_FALSE(lin.phase_ends(2));
  EXPECT_TRUE(lin.phase_ends(9));
  const XiSchedule none(XiScheduleKind::none, 0.3, 10, 5, 10);
  EXPECT_FALSE(none.active());
  EXPECT_EQ(none.xi(9), 0.3);
  EXPECT_THROW(XiSchedule(XiScheduleKind::exp_linear, 0.0, 1.0, 3, 9), UsageError);
}

// A SoRA run with a rising xi logs one point per phase, the non-zero gates never grow from one
// phase to the next and reach fewer than at the start; TensorBoard gets the same points.
TEST(SoraSchedule, RunLogsTheCurveAsGatesCloseOneByOne) {
  auto rows = synthetic_rows(16, 16, 50), held_out = synthetic_rows(4, 16, 50);
  torch::manual_seed(7);
  model::Llama m(tiny(50), torch::kFloat32);
  m->init_weights();
  Config c;
  c.adapter.method = "sora";
  c.adapter.r = 4;
  c.adapter.dropout = 0.0;
  c.adapter.targets = {"q", "v"};
  c.adapter.sora.schedule = XiScheduleKind::linear;
  c.adapter.sora.lambda2 = 0.01;
  c.adapter.sora.max_lambda = 0.3;
  c.adapter.sora.lambda_num = 4;
  c.optim.lr = 1e-2;
  c.optim.global_batch_size = 4;
  c.optim.max_steps = 12;
  c.run.log_every = 100;
  adapters::attach(m, c.adapter);
  const std::string dir = run_dir("sora_schedule");
  trainer::Trainer t(c, m, rows, held_out, dir);
  t.run();
  const auto points = trainer::read_xi_points(dir + "/metrics.jsonl");
  ASSERT_EQ(points.size(), 4u);
  const int64_t total = 2 * 2 * 4;  // layers x targets x r
  for (size_t i = 0; i < points.size(); ++i) {
    EXPECT_NEAR(points[i].xi, 0.01 + 0.29 * i / 3, 1e-12);
    EXPECT_TRUE(std::isfinite(points[i].train_loss) && std::isfinite(points[i].held_out_loss));
    if (i > 0) {
      EXPECT_LE(points[i].nonzero, points[i - 1].nonzero) << "phase " << i;
    }
  }
  EXPECT_LT(points.back().nonzero, total);
  // The same points in TensorBoard's event file, one event per phase.
  std::vector<double> xi_events;
  for (const auto& e : trainer::decode_records(read_file(tensorboard_file(dir))))
    for (const auto& [tag, value] : e.scalars)
      if (tag == "xi_phase/xi") xi_events.push_back(value);
  ASSERT_EQ(xi_events.size(), points.size());
  for (size_t i = 0; i < points.size(); ++i) EXPECT_FLOAT_EQ(xi_events[i], points[i].xi);
}

// The allocator as `spartan` sets it: a block larger than 32 MiB (a 70B shard's weight-sized
// temporaries) goes back to the kernel when freed. Kept in the heap, each freed block left a hole
// below the small tensor allocated after it, which the next, larger block could not reuse: a rank
// of a TP=8 LLaMA-2-70B slice held 2 GB of free heap beside 0.75 GB in use, and eight of them
// exhausted 24 GB. Growing blocks, each followed by a small one that stays: the heap policy holds
// their sum (about 850 MB here), the process must hold less than three of them.
TEST(Process, LargeFreedBlocksDoNotStayResident) {
  trainer::configure_process();
  std::vector<torch::Tensor> small;
  const int64_t before = spartan::resident_bytes();
  int64_t largest = 0;
  for (int64_t mb = 40; mb <= 130; mb += 10) {
    auto big = torch::ones({mb << 18});  // mb MiB of fp32, every page touched
    largest = std::max<int64_t>(largest, big.nbytes());
    small.push_back(torch::ones({1 << 18}));  // 1 MiB, allocated above it
  }
  const int64_t grown = spartan::resident_bytes() - before;
  EXPECT_LT(grown, 3 * largest) << "resident memory grew by " << grown / (1 << 20) << " MiB";
}

// A model whose projection shards are all under 32 MiB keeps even larger blocks in the heap (a
// step's logits are then reused instead of faulted in again at each step); a model with larger
// shards hands back every block from 1 MiB when it is freed.
TEST(Process, SmallModelsKeepLargeBlocksInTheHeap) {
  trainer::configure_process();
  EXPECT_FALSE(trainer::fit_allocator_to(32 << 20));
  {
    { auto warm = torch::ones({1 << 20}); }  // the first call's own allocations
    const int64_t before = spartan::resident_bytes();
    { auto activation = torch::ones({4 << 20}); }  // 16 MiB, touched, freed
    const int64_t held = spartan::resident_bytes() - before;
    EXPECT_LT(held, 4 << 20) << "a large model kept a freed 16 MiB block: " << held << " bytes";
  }
  EXPECT_TRUE(trainer::fit_allocator_to(3 << 20));
  const int64_t before = spartan::resident_bytes();
  { auto logits = torch::ones({100 << 18}); }  // 100 MiB of fp32, every page touched, freed
  const int64_t held = spartan::resident_bytes() - before;
  EXPECT_GT(held, 90 << 20) << "the freed block went back: " << held / (1 << 20) << " MiB held";
  trainer::configure_process();  // the threshold again, for what runs after in this process
}

// spartan plan's activation count (model/plan.h) against the memory a forward pass keeps for the
// backward, measured as resident memory on the CPU (fp32): every allocation of 64 KiB or more is
// its own mapping (no glibc caching), so the growth is what autograd holds. LoRA, SoRA with
// dropout, SPP's effective form with and without dropout (its weight rebuilt in the backward
// pass, or kept), (IA)^3 and full training, within 5%
// (measured: within 3%).
TEST(PlanMeasured, ActivationsMatchWhatAForwardPassKeeps) {
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  model::LlamaArch a;
  a.vocab_size = 512;
  a.hidden_size = 256;
  a.intermediate_size = 688;
  a.num_layers = 2;
  a.num_heads = 8;
  a.num_kv_heads = 4;
  a.max_position_embeddings = 256;
  const int64_t B = 4, T = 256;
  struct Case {
    std::string method;
    double dropout;
    bool recompute_weight;  // SPP's effective form
  };
  const std::vector<Case> runs = {{"lora", 0.0, true}, {"sora", 0.1, true}, {"spp", 0.0, true},
                                  {"spp", 0.1, true},  {"spp", 0.0, false}, {"spp", 0.1, false},
                                  {"ia3", 0.0, true},  {"full", 0.0, true}};
  for (const auto& [method, dropout, recompute_weight] : runs) {
    torch::manual_seed(3);
    model::Llama m(a, torch::kFloat32);
    m->init_weights();
    AdapterConfig ac;
    ac.method = method;
    ac.r = 8;
    ac.dropout = dropout;
    ac.spp.recompute_weight = recompute_weight;
    ac.targets = {"q", "k", "v", "o", "gate", "up", "down"};
    if (method == "ia3") ac.targets = {"k", "v", "down"};
    adapters::attach(m, ac);
    m->train();
    const auto ids = torch::randint(3, a.vocab_size, {B, T}, torch::kInt64);
    model::causal_lm_loss(m->forward(ids), ids).backward();  // one-time allocations first
    m->zero_grad();
    const int64_t before = spartan::resident_bytes();
    auto loss = model::causal_lm_loss(m->forward(ids), ids);
    const double kept = double(spartan::resident_bytes() - before);
    loss.backward();

    model::PlanInputs in;
    in.arch = a;
    in.method = adapters::method(method).costs(ac);
    in.r = ac.r;
    in.targets = ac.targets;
    in.dropout = dropout;
    in.base_bytes = 4;
    in.seq_len = T;
    in.micro_batch = B;
    in.global_batch = B;
    const auto plan = model::make_plan(in);
    // The layers' activations (the first layer's input norm keeps nothing when the embedding is
    // frozen), and the final norm's and the loss's.
    const double predicted = double(a.num_layers) * plan.activation_per_layer + plan.head_kept -
                             (method == "full" ? 0.0 : 4.0 * B * T * a.hidden_size);
    std::printf("%s, dropout %g%s: a forward pass kept %.2f MB, the plan says %.2f MB\n",
                method.c_str(), dropout, recompute_weight ? "" : ", weight kept", kept / 1e6,
                predicted / 1e6);
    EXPECT_NEAR(kept, predicted, 0.05 * predicted)
        << method << ": measured " << kept / 1e6 << " MB, planned " << predicted / 1e6 << " MB";
  }
}
