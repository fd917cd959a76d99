// kernels/: each CPU reference against the plain torch expression, and each CUDA implementation
// against the CPU reference on the GPU (suites *Gpu, label gpu; skipped where no GPU is visible).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/kernels.h"

namespace {

using spartan::kernels::masked_merge;

// A base with about half its entries exactly zero (a pruned weight), in `dtype`.
torch::Tensor pruned_base(int64_t m, int64_t n, torch::Dtype dtype, uint64_t seed) {
  torch::manual_seed(seed);
  auto w = torch::randn({m, n});
  w.masked_fill_(torch::rand({m, n}) < 0.5, 0.0);
  return w.to(dtype);
}

TEST(KernelsCpu, MaskedMergeEqualsTorchExpression) {
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    auto base = pruned_base(37, 53, dtype, 1);
    auto delta = 0.1 * torch::randn({37, 53});
    auto expected = (base.to(torch::kFloat32) + delta).masked_fill(base.eq(0), 0.0).to(dtype);
    auto got = masked_merge(base, delta);
    EXPECT_EQ(got.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(got, expected)) << dtype;
    EXPECT_TRUE(torch::equal(got.eq(0).masked_select(base.eq(0)),
                             torch::ones({base.eq(0).sum().item<int64_t>()}, torch::kBool)))
        << "a zero of the base was not kept";
  }
}

TEST(KernelsCpu, MaskedMergeRefusesMismatchedShapes) {
  EXPECT_THROW(masked_merge(torch::zeros({2, 3}), torch::zeros({3, 2})), std::invalid_argument);
  EXPECT_THROW(masked_merge(torch::zeros({2, 3}, torch::kInt32), torch::zeros({2, 3})),
               std::invalid_argument);
}

// SPP: a column-parallel shard's rows [24, 72) of a 96-row weight whose r = 4 blocks have 24
// rows each (the shard starts and ends on block boundaries), and a shard that starts inside one.
struct SppCase {
  int64_t m, n, r, rows_per_block, row_begin;
};
const SppCase kSppCases[] = {{48, 40, 4, 24, 24}, {30, 17, 3, 16, 5}, {96, 64, 4, 24, 0}};

struct SppInputs {
  torch::Tensor weight, alpha, beta;
  double scale = 2.0;
};

SppInputs spp_inputs(const SppCase& c, torch::Dtype dtype, uint64_t seed) {
  SppInputs in;
  in.weight = pruned_base(c.m, c.n, dtype, seed);
  in.alpha = torch::randn({c.r, c.n});
  in.beta = torch::randn({c.m, 1});
  return in;
}

// The rows of R(W_α) this shard's rows take.
torch::Tensor expanded(const SppCase& c, const torch::Tensor& alpha) {
  return alpha.repeat_interleave(c.rows_per_block, 0).narrow(0, c.row_begin, c.m);
}

TEST(KernelsCpu, SppEffectiveWeightEqualsTorchExpression) {
  for (const auto& c : kSppCases)
    for (auto dtype : {torch::kFloat32, torch::kBFloat16})
      for (auto out : {torch::kFloat32, torch::kBFloat16}) {
        const auto in = spp_inputs(c, dtype, 5);
        const auto expected =
            (in.weight.to(torch::kFloat32) * (1.0 + in.scale * expanded(c, in.alpha) * in.beta))
                .to(out);
        const auto got = spartan::kernels::spp_effective_weight(
            in.weight, in.alpha, in.beta, c.rows_per_block, c.row_begin, in.scale, out);
        EXPECT_EQ(got.scalar_type(), out);
        EXPECT_TRUE(torch::equal(got, expected)) << c.m << "x" << c.n << " " << dtype << " " << out;
        EXPECT_TRUE(got.masked_select(in.weight.eq(0)).eq(0).all().item<bool>());
      }
}

// Against autograd through the torch expression (sums in its own order: fp32 rounding).
TEST(KernelsCpu, SppWeightGradsEqualAutograd) {
  for (const auto& c : kSppCases) {
    const auto in = spp_inputs(c, torch::kFloat32, 6);
    const auto grad = torch::randn({c.m, c.n});
    auto alpha = in.alpha.clone().requires_grad_(true);
    auto beta = in.beta.clone().requires_grad_(true);
    const auto w_eff = in.weight * (1.0 + in.scale * expanded(c, alpha) * beta);
    (w_eff * grad).sum().backward();
    const auto got = spartan::kernels::spp_weight_grads(grad.clone(), in.weight, in.alpha, in.beta,
                                                        c.rows_per_block, c.row_begin, in.scale);
    EXPECT_TRUE(torch::allclose(got.alpha, alpha.grad(), 1e-5, 1e-5)) << c.m << "x" << c.n;
    EXPECT_TRUE(torch::allclose(got.beta, beta.grad(), 1e-5, 1e-5)) << c.m << "x" << c.n;
  }
}

TEST(KernelsCpu, SppKernelsRefuseWhatTheyCannotTake) {
  using spartan::kernels::spp_effective_weight;
  const auto w = torch::zeros({8, 6}), a = torch::zeros({2, 6}), b = torch::zeros({8, 1});
  EXPECT_THROW(spp_effective_weight(w, a, b, 2, 0, 1.0, torch::kFloat32), std::invalid_argument)
      << "8 rows in blocks of 2 need 4 rows of alpha";
  EXPECT_THROW(spp_effective_weight(w, a.t(), b, 4, 0, 1.0, torch::kFloat32),
               std::invalid_argument);
  EXPECT_THROW(spp_effective_weight(w, a.to(torch::kBFloat16), b, 4, 0, 1.0, torch::kFloat32),
               std::invalid_argument);
  EXPECT_THROW(spartan::kernels::spp_weight_grads(torch::zeros({8, 5}), w, a, b, 4, 0, 1.0),
               std::invalid_argument);
}

// SoRA's proximal step: the official code's three lines applied one after another (so that
// entries within 2t end at zero and larger ones shrink by t), and the soft threshold.
TEST(KernelsCpu, SoraThresholdIsTheOfficialLines) {
  using spartan::kernels::GateThresholdForm;
  auto g = torch::tensor({-1.0f, -0.5f, -0.2f, 0.0f, 0.1f, 0.5f, 0.7f});
  auto soft = g.clone();
  spartan::kernels::sora_threshold_(g, 0.3, GateThresholdForm::official);
  EXPECT_TRUE(torch::allclose(g, torch::tensor({-0.7f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.4f})));
  spartan::kernels::sora_threshold_(soft, 0.3, GateThresholdForm::soft);
  EXPECT_TRUE(torch::allclose(soft, torch::tensor({-0.7f, -0.2f, 0.0f, 0.0f, 0.0f, 0.2f, 0.4f})));
  auto ints = torch::ones({3}, torch::kInt64);
  EXPECT_THROW(spartan::kernels::sora_threshold_(ints, 0.3, GateThresholdForm::soft),
               std::invalid_argument);
  EXPECT_THROW(spartan::kernels::sora_threshold_(soft, -1.0, GateThresholdForm::soft),
               std::invalid_argument);
}

class KernelsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available())
      GTEST_SKIP() << "no GPU visible: the CUDA kernels are not run";
    if (!spartan::kernels::cuda_compiled())
      GTEST_SKIP() << "built without CUDA code (SPARTAN_CUDA=OFF)";
  }
};

// Bit for bit: the kernel adds in fp32 and rounds once, as the reference does. Sizes that fill
// the device and ragged ones; fresh random inputs each time; the output poisoned first.
TEST_F(KernelsGpu, MaskedMergeEqualsCpuReference) {
  uint64_t seed = 10;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16})
    for (auto shape : {std::vector<int64_t>{1, 1}, {129, 257}, {4096, 4096}}) {
      auto base = pruned_base(shape[0], shape[1], dtype, ++seed);
      auto delta = 0.1 * torch::randn(shape);
      auto expected = spartan::kernels::cpu::masked_merge(base, delta);
      auto got = masked_merge(base.cuda(), delta.cuda());
      EXPECT_TRUE(got.is_cuda());
      EXPECT_TRUE(torch::equal(got.cpu(), expected)) << dtype << " " << shape[0] << "x" << shape[1];
    }
}

TEST_F(KernelsGpu, MaskedMergeOnNonContiguousInput) {
  auto base = pruned_base(64, 96, torch::kBFloat16, 3).cuda().t();
  auto delta = torch::randn({96, 64}).cuda();
  EXPECT_TRUE(torch::equal(masked_merge(base, delta).cpu(),
                           spartan::kernels::cpu::masked_merge(base.cpu(), delta.cpu())));
}

// The effective weight bit for bit (the same fp32 operations in the same order), for every
// weight and result dtype, on shards that start on and inside a block and on a 70B-sized slice.
TEST_F(KernelsGpu, SppEffectiveWeightEqualsCpuReference) {
  std::vector<SppCase> cases(std::begin(kSppCases), std::end(kSppCases));
  cases.push_back({3584, 8192, 16, 1792, 3584});  // LLaMA-2-70B down_proj rows of TP rank 1 of 8
  uint64_t seed = 20;
  for (const auto& c : cases)
    for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16})
      for (auto out : {torch::kFloat32, torch::kBFloat16}) {
        const auto in = spp_inputs(c, dtype, ++seed);
        const auto expected = spartan::kernels::cpu::spp_effective_weight(
            in.weight, in.alpha, in.beta, c.rows_per_block, c.row_begin, in.scale, out);
        const auto got = spartan::kernels::spp_effective_weight(in.weight.cuda(), in.alpha.cuda(),
                                                                in.beta.cuda(), c.rows_per_block,
                                                                c.row_begin, in.scale, out);
        EXPECT_TRUE(torch::equal(got.cpu(), expected))
            << c.m << "x" << c.n << " " << dtype << " -> " << out;
      }
}

// dα bit for bit (each block's rows summed in order, as index_add_); dβ within fp32 rounding of
// its row sums (relative to the largest entry).
TEST_F(KernelsGpu, SppWeightGradsMatchCpuReference) {
  std::vector<SppCase> cases(std::begin(kSppCases), std::end(kSppCases));
  cases.push_back({3584, 8192, 16, 1792, 3584});
  uint64_t seed = 40;
  for (const auto& c : cases)
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      const auto in = spp_inputs(c, dtype, ++seed);
      const auto grad = torch::randn({c.m, c.n}).to(dtype);
      const auto expected = spartan::kernels::cpu::spp_weight_grads(
          grad.clone(), in.weight, in.alpha, in.beta, c.rows_per_block, c.row_begin, in.scale);
      const auto got = spartan::kernels::spp_weight_grads(grad.cuda(), in.weight.cuda(),
                                                          in.alpha.cuda(), in.beta.cuda(),
                                                          c.rows_per_block, c.row_begin, in.scale);
      EXPECT_TRUE(torch::equal(got.alpha.cpu(), expected.alpha))
          << c.m << "x" << c.n << " " << dtype;
      const double largest = expected.beta.abs().max().item<double>();
      EXPECT_LE((got.beta.cpu() - expected.beta).abs().max().item<double>(), 1e-5 * largest)
          << c.m << "x" << c.n << " " << dtype;
    }
}

}  // namespace
