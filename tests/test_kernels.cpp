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

}  // namespace
