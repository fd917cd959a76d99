// Each tensor- and pipeline-parallel primitive against the unsharded operation it stands for, on
// the ranks of one mpiexec (STYLE.md habit 8): every rank builds the same full tensors from one
// seed, keeps its slice, runs the primitive, and compares the output and every gradient with the
// reference's (sliced the same way). Exact where nothing is summed across ranks; within fp32
// rounding (rtol 1e-5) where partial sums meet in another order.
//   mpiexec -n N test_tp_primitives --layout TP,PP,1   (TP = N for the TP tests, PP = N for 1F1B)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "parallel/grid.h"
#include "parallel/pipeline.h"
#include "parallel/tensor_parallel.h"
#include "tests/mpi_main.h"

using namespace spartan;

namespace {

parallel::Layout g_layout;
std::unique_ptr<parallel::Grid> g_grid;

// The same full tensor on every rank (seeded here, not by the rank).
torch::Tensor full(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn(shape, torch::kFloat32);
}

// This rank's block of `t` along `dim`, out of `parts` equal blocks.
torch::Tensor block(const torch::Tensor& t, int64_t dim, int rank, int parts) {
  const int64_t n = t.size(dim) / parts;
  return t.narrow(dim, rank * n, n).contiguous();
}

bool close(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::allclose(a, b, /*rtol=*/1e-5, /*atol=*/1e-6);
}

parallel::Communicator& tp() { return g_grid->tp(); }

#define REQUIRE_TP() \
  if (tp().size() < 2) GTEST_SKIP() << "needs a TP group of several ranks (--layout N,1,1)"

// copy_to_group: identity forward; backward sums the ranks' gradients of the replicated input.
// Rank ids as data: rank r weights the output by (r + 1), so the input's gradient is Σ(r + 1).
TEST(TensorParallel, CopyToGroupSumsGradientsInBackward) {
  REQUIRE_TP();
  const auto x = full({3, 5}, 1).requires_grad_(true);
  const auto y = parallel::copy_to_group(x, tp());
  EXPECT_TRUE(torch::equal(y, x));
  (y * double(tp().rank() + 1)).sum().backward();
  const double n = tp().size();
  EXPECT_TRUE(torch::equal(x.grad(), torch::full({3, 5}, n * (n + 1) / 2)));
}

// reduce_from_group: forward sums the partial outputs; backward passes the gradient unchanged.
TEST(TensorParallel, ReduceFromGroupSumsInForward) {
  REQUIRE_TP();
  const auto x = (torch::ones({2, 4}) * double(tp().rank() + 1)).requires_grad_(true);
  const auto y = parallel::reduce_from_group(x, tp());
  const double n = tp().size();
  EXPECT_TRUE(torch::equal(y, torch::full({2, 4}, n * (n + 1) / 2)));
  const auto g = full({2, 4}, 2);
  y.backward(g);
  EXPECT_TRUE(torch::equal(x.grad(), g));
}

// gather_from_group: forward concatenates the ranks' slices along the last dim; backward keeps
// this rank's slice of the gradient.
TEST(TensorParallel, GatherFromGroupConcatenatesAndSlicesBack) {
  REQUIRE_TP();
  const int r = tp().rank(), n = tp().size();
  const auto whole = full({3, 4 * n}, 3);
  const auto x = block(whole, 1, r, n).requires_grad_(true);
  const auto y = parallel::gather_from_group(x, tp());
  EXPECT_TRUE(torch::equal(y, whole));
  const auto g = full({3, 4 * n}, 4);
  y.backward(g);
  EXPECT_TRUE(torch::equal(x.grad(), block(g, 1, r, n)));
}

// A column-parallel linear feeding a row-parallel one (Megatron's MLP: f = copy_to_group before,
// g = reduce_from_group after) equals the unsharded pair: output and the gradients of the input
// and of both weights (each rank's slice of the full gradient).
TEST(TensorParallel, ColumnThenRowParallelLinearsEqualTheUnshardedPair) {
  REQUIRE_TP();
  const int r = tp().rank(), n = tp().size();
  const int64_t H = 8, I = 6 * n;
  const auto x_ref = full({2, 5, H}, 5).requires_grad_(true);
  const auto A_ref = full({I, H}, 6).requires_grad_(true);  // column-parallel: rows split
  const auto B_ref = full({H, I}, 7).requires_grad_(true);  // row-parallel: columns split
  const auto g = full({2, 5, H}, 8);
  const auto y_ref = torch::linear(torch::tanh(torch::linear(x_ref, A_ref)), B_ref);
  y_ref.backward(g);

  const auto x = x_ref.detach().clone().requires_grad_(true);
  const auto A = block(A_ref.detach(), 0, r, n).requires_grad_(true);
  const auto B = block(B_ref.detach(), 1, r, n).requires_grad_(true);
  const auto h = torch::tanh(torch::linear(parallel::copy_to_group(x, tp()), A));  // (2, 5, I/n)
  const auto y = parallel::reduce_from_group(torch::linear(h, B), tp());           // (2, 5, H)
  y.backward(g);
  EXPECT_TRUE(close(y, y_ref));
  EXPECT_TRUE(close(x.grad(), x_ref.grad()));
  EXPECT_TRUE(close(A.grad(), block(A_ref.grad(), 0, r, n)));
  EXPECT_TRUE(close(B.grad(), block(B_ref.grad(), 1, r, n)));
}

// The vocabulary-parallel embedding equals the lookup in the whole table, and each rank's rows
// get the whole table's gradient for them.
TEST(TensorParallel, VocabParallelEmbeddingEqualsTheWholeTable) {
  REQUIRE_TP();
  const int r = tp().rank(), n = tp().size();
  const int64_t V = 10 * n, H = 6;
  const auto W_ref = full({V, H}, 9).requires_grad_(true);
  const auto ids = torch::arange(0, 12, torch::kInt64).mul(7).remainder(V).view({3, 4});
  const auto g = full({3, 4, H}, 10);
  torch::embedding(W_ref, ids).backward(g);
  const auto W = block(W_ref.detach(), 0, r, n).requires_grad_(true);
  const auto y = parallel::vocab_parallel_embedding(ids, W, r * (V / n), tp());
  y.backward(g);
  EXPECT_TRUE(close(y, torch::embedding(W_ref.detach(), ids)));
  EXPECT_TRUE(close(W.grad(), block(W_ref.grad(), 0, r, n)));
}

// The vocabulary-parallel cross-entropy equals torch's over the whole logits, ignored targets
// (-100) included: the losses, and each rank's columns of the logits' gradient.
TEST(TensorParallel, VocabParallelCrossEntropyEqualsTheWholeLogits) {
  REQUIRE_TP();
  const int r = tp().rank(), n = tp().size();
  const int64_t N = 7, V = 12 * n;
  const auto logits_ref = (full({N, V}, 11) * 3).requires_grad_(true);
  auto targets = torch::arange(0, N, torch::kInt64).mul(5).remainder(V);
  targets[2] = -100;
  const auto g = full({N}, 12).abs();
  const auto loss_ref = torch::nn::functional::cross_entropy(
      logits_ref, targets,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(-100));
  loss_ref.backward(g);
  const auto logits = block(logits_ref.detach(), 1, r, n).requires_grad_(true);
  const auto loss = parallel::vocab_parallel_cross_entropy(logits, targets, r * (V / n), tp());
  loss.backward(g);
  EXPECT_TRUE(close(loss, loss_ref.detach()));
  EXPECT_EQ(loss[2].item<float>(), 0.0f);
  EXPECT_TRUE(close(logits.grad(), block(logits_ref.grad(), 1, r, n)));
}

// The 1F1B schedule over the pipeline equals running the stages one after another for each
// micro-batch: the same loss gradients reach every stage's weight.
TEST(Pipeline, OneForwardOneBackwardEqualsSequentialExecution) {
  auto& pp = g_grid->pp();
  if (pp.size() < 2) GTEST_SKIP() << "needs several pipeline stages (--layout 1,N,1)";
  const int S = pp.size(), s = pp.rank();
  const int64_t M = 2 * S + 1, B = 3, D = 8;  // more micro-batches than stages, an odd count
  std::vector<torch::Tensor> W_ref;
  for (int k = 0; k < S; ++k) W_ref.push_back((full({D, D}, 20 + k) * 0.5).requires_grad_(true));
  const auto inputs = full({M, B, D}, 30);
  auto run_stage = [](const torch::Tensor& h, const torch::Tensor& W) {
    return torch::tanh(torch::linear(h, W));
  };
  for (int64_t i = 0; i < M; ++i) {  // reference: every stage here, micro-batch by micro-batch
    auto h = inputs[i];
    for (int k = 0; k < S; ++k) h = run_stage(h, W_ref[k]);
    (h.pow(2).sum() * double(i + 1)).backward();
  }

  const auto W = W_ref[s].detach().clone().requires_grad_(true);
  parallel::PipelineStage stage;
  stage.micro_batches = M;
  stage.activation_shape = [&](int64_t) { return std::vector<int64_t>{B, D}; };
  stage.forward = [&](int64_t i, const torch::Tensor& in) {
    const auto h = run_stage(s == 0 ? inputs[i] : in, W);
    return s == S - 1 ? h.pow(2).sum() * double(i + 1) : h;
  };
  parallel::train_1f1b(stage, pp);
  EXPECT_TRUE(close(W.grad(), W_ref[s].grad()))
      << "stage " << s << ": largest difference "
      << (W.grad() - W_ref[s].grad()).abs().max().item<double>();
}

}  // namespace

// A grid over axes of any names (here "a" of 2 ranks, fastest, and "b" of the rest): each
// group holds the ranks that differ only along its axis, ordered by their coordinate, as the
// layout's tp, dp and pp groups do; the layout's axes it lacks have size 1.
TEST(Grid, NamedAxesSplitTheWorld) {
  const int world = g_grid->world_size(), r = g_grid->rank();
  if (world % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
  auto grid = parallel::Grid::create({{"a", 2}, {"b", world / 2}}, "test");
  EXPECT_EQ(grid->rank(), r);
  EXPECT_EQ(grid->coordinate("a"), r % 2);
  EXPECT_EQ(grid->coordinate("b"), r / 2);
  EXPECT_EQ(grid->group("b").size(), world / 2);
  auto along_a = torch::tensor({int64_t(r)});
  grid->group("a").all_reduce(along_a);
  EXPECT_EQ(along_a.item<int64_t>(), 2 * (r - r % 2) + 1);  // r and its neighbour along a
  auto along_b = torch::tensor({int64_t(r)});
  grid->group("b").all_reduce(along_b);
  const int64_t nb = world / 2;
  EXPECT_EQ(along_b.item<int64_t>(), nb * (r % 2) + nb * (nb - 1));  // Σ_k (r % 2 + 2k)
  EXPECT_EQ(grid->tp().size(), 1);
  EXPECT_EQ(grid->layout().world(), 1);
  EXPECT_EQ(grid->coordinates(), "rank " + std::to_string(r) + " (dp 0, pp 0, tp 0, b " +
                                     std::to_string(r / 2) + ", a " + std::to_string(r % 2) + ")");
  EXPECT_THROW(grid->group("sp"), Error);
  EXPECT_THROW(parallel::Grid::create({{"a", world + 1}}, "test"), UsageError);
}

int main(int argc, char** argv) {
  return testing_support::run_mpi_tests(argc, argv, g_layout, g_grid);
}
