#include "trainer/eval.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "parallel/pipeline.h"
#include "parallel/runtime.h"
#include "trainer/stage.h"

namespace spartan::trainer {
namespace {

// Sum of next-token losses and count of scored targets for a batch of rows.
std::pair<double, int64_t> score(model::Llama& model, const torch::Tensor& ids,
                                 const torch::Tensor& labels) {
  parallel::ComputeScope compute(model->device(), model->compute_dtype());
  auto losses =
      model::token_losses(model->forward(ids.to(model->device())), labels.to(model->device()));
  auto counted = labels.narrow(1, 1, labels.size(1) - 1).ne(data::kIgnore);
  return {losses.sum().item<double>(), counted.sum().item<int64_t>()};
}

EvalResult finish(double sum, int64_t count) {
  EvalResult r;
  r.tokens = count;
  r.loss = count ? sum / static_cast<double>(count) : 0.0;
  r.ppl = std::exp(r.loss);
  return r;
}

}  // namespace

EvalResult evaluate_rows(model::Llama& model, const data::Sequences& rows, int64_t batch_size,
                         int64_t max_batches, parallel::Grid* grid) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const int64_t L = rows.seq_len, n = rows.rows();
  auto all_ids = torch::from_blob(const_cast<int64_t*>(rows.ids.data()), {n, L}, torch::kInt64);
  auto all_labels =
      torch::from_blob(const_cast<int64_t*>(rows.labels.data()), {n, L}, torch::kInt64);
  double sum = 0;
  int64_t count = 0;
  std::unique_ptr<parallel::Grid> solo;  // one process: the same path with groups of one
  if (!grid) {
    solo = parallel::Grid::solo();
    grid = solo.get();
  }
  // This replica's batches, back to back: the stage's micro-batches are exactly those batches.
  std::vector<torch::Tensor> my_ids, my_labels;
  const int64_t dp = grid->layout().dp;
  for (int64_t r0 = 0, b = 0; r0 < n; r0 += batch_size, ++b) {
    if (max_batches > 0 && b >= max_batches) break;
    if (b % dp != grid->dp_rank()) continue;
    const int64_t rows_b = std::min(batch_size, n - r0);
    my_ids.push_back(all_ids.narrow(0, r0, rows_b));
    my_labels.push_back(all_labels.narrow(0, r0, rows_b));
  }
  if (!my_ids.empty()) {
    auto ids = torch::cat(my_ids), labels = torch::cat(my_labels);
    count = labels.narrow(1, 1, L - 1).ne(data::kIgnore).sum().item<int64_t>();
    auto stage =
        model_stage(model, ids, labels, batch_size, [&sum](int64_t, const torch::Tensor& losses) {
          auto total = losses.sum();
          sum += total.item<double>();
          return total;
        });
    parallel::forward_only(stage, grid->pp());
  }
  auto totals = torch::tensor({sum, static_cast<double>(count)}, torch::kFloat64);
  grid->pp().all_reduce(totals, parallel::ReduceOp::max);  // the last stage holds the sum
  grid->dp().all_reduce(totals);
  model->train(was_training);
  return finish(totals[0].item<double>(), static_cast<int64_t>(totals[1].item<double>()));
}

EvalResult evaluate_stream(model::Llama& model, const std::vector<int64_t>& tokens, int64_t window,
                           int64_t stride, int64_t batch_size) {
  if (stride <= 0 || stride > window)
    throw UsageError("eval stride " + std::to_string(stride) + " outside (0, window " +
                         std::to_string(window) + "]",
                     "[eval] stride", "use 0 < stride <= data.seq_len");
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const int64_t n = static_cast<int64_t>(tokens.size());
  // Windows [begin, begin + window) and the first target each one scores.
  std::vector<std::pair<int64_t, int64_t>> windows;
  int64_t scored_until = 1;  // targets before this index are scored already (token 0 never is)
  for (int64_t begin = 0; scored_until < n; begin += stride) {
    const int64_t end = std::min(begin + window, n);
    windows.emplace_back(begin, scored_until);
    scored_until = end;
    if (end == n) break;
  }
  // Batches of windows of equal length (all but possibly the last are full).
  double sum = 0;
  int64_t count = 0;
  for (size_t w0 = 0; w0 < windows.size();) {
    const int64_t len = std::min(window, n - windows[w0].first);
    std::vector<int64_t> ids, labels;
    size_t w = w0;
    for (; w < windows.size() && w < w0 + static_cast<size_t>(batch_size); ++w) {
      const int64_t begin = windows[w].first;
      if (std::min(window, n - begin) != len) break;
      ids.insert(ids.end(), tokens.begin() + begin, tokens.begin() + begin + len);
      labels.insert(labels.end(), tokens.begin() + begin, tokens.begin() + begin + len);
      for (int64_t i = 0; i < windows[w].second - begin; ++i)
        labels[labels.size() - len + i] = data::kIgnore;
    }
    const int64_t b = static_cast<int64_t>(w - w0);
    auto [s, c] =
        score(model, torch::tensor(ids).view({b, len}), torch::tensor(labels).view({b, len}));
    sum += s;
    count += c;
    w0 = w;
  }
  model->train(was_training);
  return finish(sum, count);
}

}  // namespace spartan::trainer
