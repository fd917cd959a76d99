// The runtime (parallel/runtime.h): device and precision resolved from the configuration, the
// compute scope, and training in bf16 products against the fp32 run of the same seed.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "adapters/adapter.h"
#include "common/error.h"
#include "data/dataset.h"
#include "model/inspect.h"
#include "model/llama.h"
#include "parallel/runtime.h"
#include "tests/trainer_support.h"
#include "trainer/trainer.h"

using namespace spartan;

namespace {

model::LlamaArch tiny() { return testing_support::tiny(50); }

data::Sequences rows(int64_t n, int64_t L) { return testing_support::synthetic_rows(n, L, 50); }

// A scratch folder for a run's metrics, removed when the test ends.
struct Scratch {
  std::string path = testing::TempDir() + "spartan_precision_" +
                     testing::UnitTest::GetInstance()->current_test_info()->name();
  Scratch() { std::system(("rm -rf " + path + " && mkdir -p " + path).c_str()); }
  ~Scratch() { std::system(("rm -rf " + path).c_str()); }
};

// Half of every q and down weight set to zero (by magnitude), the rest left as initialised.
void prune_half(model::Llama& m) {
  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < m->num_layers(); ++l)
    for (model::Proj p : {model::Proj::q, model::Proj::down}) {
      auto& w = m->projection(l, p)->weight;
      w.masked_fill_(w.abs() < w.abs().to(torch::kFloat32).median().to(w.scalar_type()), 0.0);
    }
}

}  // namespace

TEST(Runtime, AutoIsTheCpuInFp32WhereNoGpuIsVisible) {
  if (parallel::cuda_visible()) GTEST_SKIP() << "a GPU is visible: auto resolves to it";
  const auto r = parallel::make_runtime(DeviceKind::automatic, Precision::automatic,
                                        Precision::automatic, 0, "c.toml");
  EXPECT_TRUE(r.device.is_cpu());
  EXPECT_EQ(r.base_dtype, torch::kFloat32);
  EXPECT_EQ(r.compute_dtype, torch::kFloat32);
  EXPECT_EQ(r.master_dtype, torch::kFloat32);
  EXPECT_EQ(r.describe(), "cpu, base fp32, compute fp32, masters fp32");
  const auto bf16 =
      parallel::make_runtime(DeviceKind::cpu, Precision::bf16, Precision::bf16, 3, "c.toml");
  EXPECT_EQ(bf16.base_dtype, torch::kBFloat16);
  EXPECT_EQ(bf16.compute_dtype, torch::kBFloat16);
  EXPECT_EQ(bf16.master_dtype, torch::kFloat32);  // masters stay fp32 whatever the base
  EXPECT_EQ(bf16.base().dtype(), torch::kBFloat16);
}

TEST(Runtime, CudaWithoutAGpuIsAUsageErrorNamingTheKey) {
  if (parallel::cuda_visible()) GTEST_SKIP() << "a GPU is visible";
  try {
    parallel::make_runtime(DeviceKind::cuda, Precision::automatic, Precision::automatic, 0,
                           "c.toml:3:1 (key 'run.device')");
    FAIL() << "no error";
  } catch (const UsageError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("sees no CUDA device"), std::string::npos) << what;
    EXPECT_NE(what.find("c.toml:3:1"), std::string::npos) << what;
  }
}

// Inside a scope of bf16 compute, products run in bf16 and their gradients reach fp32 leaves in
// fp32; outside, and in a scope of fp32 compute, nothing changes.
TEST(Runtime, ComputeScopeCastsProductsAndRestores) {
  auto w = torch::randn({8, 8}, torch::requires_grad());
  auto x = torch::randn({4, 8});
  parallel::Runtime bf16;
  bf16.compute_dtype = torch::kBFloat16;
  torch::Tensor y;
  {
    parallel::ComputeScope scope(bf16);
    y = torch::linear(x, w);
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
    {
      parallel::ComputeScope inner(bf16);  // nested scopes keep the outer one's state
    }
    EXPECT_EQ(torch::matmul(x, w).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(torch::linear(x, w).scalar_type(), torch::kFloat32);
  y.to(torch::kFloat32).sum().backward();
  EXPECT_EQ(w.grad().scalar_type(), torch::kFloat32);
  {
    parallel::ComputeScope fp32{parallel::Runtime{}};
    EXPECT_EQ(torch::linear(x, w).scalar_type(), torch::kFloat32);
  }
}

// The same seed, data and LoRA run once with fp32 products and once with bf16 products (fp32
// masters in both): the losses follow each other within 1% over 12 steps, and they differ, so the
// bf16 products were really used. Measured here: at most 0.01% apart.
TEST(Precision, Bf16ProductsTrainLikeFp32) {
  const auto data = rows(16, 24);
  data::Sequences none;
  std::vector<std::vector<double>> losses(2);
  for (int variant = 0; variant < 2; ++variant) {
    Scratch scratch;
    torch::manual_seed(5);
    model::Llama m(tiny(), torch::kFloat32);
    m->init_weights();
    m->set_compute_dtype(variant == 0 ? torch::kFloat32 : torch::kBFloat16);
    Config c;
    c.adapter.dropout = 0.0;
    c.optim.lr = 5e-3;
    c.optim.schedule = LrScheduleKind::constant;
    c.optim.global_batch_size = 8;
    c.optim.max_steps = 12;
    c.run.log_every = 100;
    adapters::attach(m, c.adapter);
    trainer::Trainer t(c, m, data, none, scratch.path);
    t.on_step = [&](int64_t, double loss) { losses[variant].push_back(loss); };
    t.run();
    for (const auto& [name, p] : adapters::trainable_parameters(m))
      ASSERT_EQ(p.scalar_type(), torch::kFloat32) << name;  // the masters
  }
  ASSERT_EQ(losses[1].size(), 12u);
  double worst = 0;
  for (size_t s = 0; s < losses[0].size(); ++s)
    worst = std::max(worst, std::abs(losses[1][s] - losses[0][s]) / losses[0][s]);
  std::printf("bf16 products: losses at most %.2e apart (relative) from fp32's\n", worst);
  EXPECT_LT(worst, 1e-2);
  EXPECT_GT(worst, 0) << "the bf16 run equals the fp32 run bit for bit: no bf16 product ran";
  EXPECT_LT(losses[1].back(), losses[1].front() - 0.3);  // and it trained
}

// SPP with the base held in bf16 and bf16 products: after training and the merge, every zero of
// the base is a zero of the merged weight and no other entry became one.
TEST(Precision, SppInBf16KeepsEveryZero) {
  Scratch scratch;
  torch::manual_seed(6);
  model::Llama m(tiny(), torch::kBFloat16);
  m->init_weights();
  prune_half(m);
  m->set_compute_dtype(torch::kBFloat16);
  const auto q_before = m->projection(1, model::Proj::q)->weight.clone();
  const auto zeros = model::projection_zeros(m, {model::Proj::q, model::Proj::down}).zeros;
  ASSERT_GT(zeros, 0);
  Config c;
  c.adapter.method = "spp";
  c.adapter.targets = {"q", "down"};
  c.adapter.dropout = 0.0;
  c.optim.lr = 2e-2;
  c.optim.global_batch_size = 8;
  c.optim.max_steps = 6;
  c.run.log_every = 100;
  adapters::attach(m, c.adapter);
  const auto data = rows(8, 16);
  const data::Sequences none;
  trainer::Trainer t(c, m, data, none, scratch.path);
  t.run();
  EXPECT_EQ(adapters::zero_pattern_changes(m).lost, 0);
  adapters::merge_into_base(m, MergeForm::dense);
  const auto q = m->projection(1, model::Proj::q)->weight;
  EXPECT_EQ(q.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(q.eq(0), q_before.eq(0)));
  EXPECT_EQ(model::projection_zeros(m, {model::Proj::q, model::Proj::down}).zeros, zeros);
  EXPECT_FALSE(torch::equal(q, q_before));  // the kept entries moved
}

// ---- on a GPU (label gpu: these skip where none is visible) -----------------------------------

namespace {

// The same tiny model with LoRA or SPP attached, on `device`, its base and adapters equal to the
// ones made on the CPU from `seed`.
model::Llama twin(torch::Device device, torch::Dtype base, uint64_t seed, const Config& c) {
  torch::manual_seed(seed);
  model::Llama cpu(tiny(), torch::kFloat32);
  cpu->init_weights();
  prune_half(cpu);
  model::Llama m(tiny(), torch::dtype(base).device(device));
  {
    torch::NoGradGuard no_grad;
    auto from = cpu->named_parameters();
    for (auto& p : m->named_parameters()) p.value().copy_(from[p.key()]);
  }
  torch::manual_seed(seed + 1);  // the adapters' initialisation, made on the CPU, then moved
  adapters::attach(m, c.adapter);
  return m;
}

std::vector<double> train_losses(model::Llama& m, const Config& c, const data::Sequences& data) {
  Scratch scratch;
  const data::Sequences none;
  std::vector<double> losses;
  trainer::Trainer t(c, m, data, none, scratch.path);
  t.on_step = [&](int64_t, double loss) { losses.push_back(loss); };
  t.run();
  return losses;
}

Config gpu_config(const std::string& method) {
  Config c;
  c.adapter.method = method;
  c.adapter.dropout = 0.0;
  c.optim.lr = 1e-2;
  c.optim.schedule = LrScheduleKind::constant;
  c.optim.global_batch_size = 8;
  c.optim.max_steps = 4;
  c.run.log_every = 100;
  return c;
}

}  // namespace

// LoRA steps on the GPU in fp32 equal the CPU's within 1e-4 (relative); with the base in bf16 and
// bf16 products within 2%, its masters fp32 and on the GPU.
TEST(TrainingGpu, StepsEqualTheCpuSteps) {
  if (!parallel::cuda_visible()) GTEST_SKIP() << "no CUDA device visible: nothing to compare";
  const auto data = rows(16, 24);
  const Config c = gpu_config("lora");
  auto cpu = twin(torch::kCPU, torch::kFloat32, 7, c);
  auto gpu = twin(torch::kCUDA, torch::kFloat32, 7, c);
  auto gpu_bf16 = twin(torch::kCUDA, torch::kBFloat16, 7, c);
  gpu_bf16->set_compute_dtype(torch::kBFloat16);
  const auto want = train_losses(cpu, c, data), got = train_losses(gpu, c, data),
             got_bf16 = train_losses(gpu_bf16, c, data);
  ASSERT_EQ(got.size(), want.size());
  for (size_t s = 0; s < want.size(); ++s) {
    EXPECT_NEAR(got[s], want[s], 1e-4 * want[s]) << "step " << s + 1;
    EXPECT_NEAR(got_bf16[s], want[s], 2e-2 * want[s]) << "step " << s + 1;
  }
  for (const auto& [name, p] : adapters::trainable_parameters(gpu_bf16)) {
    EXPECT_TRUE(p.is_cuda()) << name;
    EXPECT_EQ(p.scalar_type(), torch::kFloat32) << name;
  }
}

// SPP on the GPU, base and products in bf16: every base zero survives the steps and the merge.
TEST(TrainingGpu, SppKeepsEveryZero) {
  if (!parallel::cuda_visible()) GTEST_SKIP() << "no CUDA device visible: nothing to compare";
  Config c = gpu_config("spp");
  c.adapter.targets = {"q", "down"};
  auto m = twin(torch::kCUDA, torch::kBFloat16, 8, c);
  m->set_compute_dtype(torch::kBFloat16);
  const auto before = m->projection(1, model::Proj::q)->weight.clone();
  const auto zeros = model::projection_zeros(m, {model::Proj::q, model::Proj::down}).zeros;
  train_losses(m, c, rows(8, 16));
  EXPECT_EQ(adapters::zero_pattern_changes(m).lost, 0);
  adapters::merge_into_base(m, MergeForm::dense);
  const auto q = m->projection(1, model::Proj::q)->weight;
  EXPECT_TRUE(q.is_cuda());
  EXPECT_TRUE(torch::equal(q.eq(0), before.eq(0)));
  EXPECT_EQ(model::projection_zeros(m, {model::Proj::q, model::Proj::down}).zeros, zeros);
}
