#include "trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "adapters/adapter.h"
#include "adapters/full.h"
#include "adapters/method.h"
#include "checkpoints/checkpoint.h"
#include "common/error.h"
#include "common/memory_use.h"
#include "data/sampler.h"
#include "parallel/pipeline.h"
#include "trainer/checkpointing.h"
#include "trainer/distributed.h"
#include "trainer/optimizers.h"
#include "trainer/progress.h"
#include "trainer/schedule.h"
#include "trainer/stage.h"

namespace spartan::trainer {
std::pair<torch::Tensor, torch::Tensor> gather(const data::Sequences& s,
                                               const std::vector<int64_t>& idx) {
  const int64_t L = s.seq_len, n = static_cast<int64_t>(idx.size());
  auto ids = torch::empty({n, L}, torch::kInt64), labels = torch::empty({n, L}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(s.ids.begin() + idx[i] * L, L, ids.data_ptr<int64_t>() + i * L);
    std::copy_n(s.labels.begin() + idx[i] * L, L, labels.data_ptr<int64_t>() + i * L);
  }
  return {ids, labels};
}

namespace {
// max_steps, or whole global batches over the epochs.
int64_t steps_of(const OptimConfig& o, int64_t rows) {
  return o.max_steps > 0 ? o.max_steps : rows / o.global_batch_size * o.epochs;
}
}  // namespace

Trainer::Trainer(const Config& config, model::Llama& model, const data::Sequences& train,
                 const data::Sequences& held_out, std::string run_dir)
    : config_(config),
      model_(model),
      own_grid_(parallel::Grid::solo()),
      grid_(*own_grid_),
      train_(train),
      held_out_(held_out),
      run_dir_(std::move(run_dir)),
      total_steps_(steps_of(config.optim, train.rows())) {}

Trainer::Trainer(const Config& config, model::Llama& model, parallel::Grid& grid,
                 const data::Sequences& train, const data::Sequences& held_out, std::string run_dir)
    : config_(config),
      model_(model),
      grid_(grid),
      train_(train),
      held_out_(held_out),
      run_dir_(std::move(run_dir)),
      total_steps_(steps_of(config.optim, train.rows())) {}

void Trainer::enable_checkpoints(nlohmann::json identity, std::vector<model::Proj> mask_targets) {
  checkpointing_ = true;
  identity_ = std::move(identity);
  mask_targets_ = std::move(mask_targets);
}

namespace {

// The global batch must split into whole micro-batches on every DP replica, and fill the
// pipeline.
void check_batch_split(const OptimConfig& o, const parallel::Layout& layout) {
  if (o.global_batch_size % (o.micro_batch_size * layout.dp) != 0)
    throw UsageError("optim.global_batch_size = " + std::to_string(o.global_batch_size) +
                         " is not a multiple of micro_batch_size x dp",
                     "[optim]", "make the global batch a multiple of micro_batch_size x dp");
  const int64_t n = o.global_batch_size / (o.micro_batch_size * layout.dp);
  if (n < layout.pp)
    throw UsageError(std::to_string(n) + " micro-batches per step cannot fill " +
                         std::to_string(layout.pp) + " pipeline stages",
                     "[optim] global_batch_size / (micro_batch_size x dp)",
                     "use at least pp micro-batches per DP replica");
}

// SoRA's ξ schedule logs held-out loss at the end of each phase; rank 0 prints its values.
void check_xi_schedule(const Config& c, const Optimizers& optimizers, bool has_held_out,
                       bool root) {
  if (!optimizers.xi_phases()) return;
  if (!has_held_out)
    throw UsageError("the SoRA xi schedule logs held-out loss, but there is no held-out data",
                     "[data] held_out_fraction", "set held_out_fraction > 0");
  if (!root) return;
  const auto& sora = c.adapter.sora;
  std::printf("SoRA xi schedule \"%s\":", name_of(sora.schedule).c_str());
  for (double xi : optimizers.xi_schedule().values()) std::printf(" %g", xi);
  std::printf(", one phase each\n");
}

// Test-only faults (SPARTAN_FAULT): a rank that throws, or one that hangs without failing (it
// stops calling into MPI; its peers wait in their next collective), after step `steps_done`.
void inject_faults(const parallel::Grid& grid, int64_t steps_done) {
  const std::string rank = std::to_string(grid.rank());
  if (checkpoints::fault(("throw-rank" + rank).c_str(), steps_done))
    throw Error("injected failure (SPARTAN_FAULT) at step " + std::to_string(steps_done),
                grid.coordinates(), "unset SPARTAN_FAULT");
  if (checkpoints::fault(("hang-rank" + rank).c_str(), steps_done))
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

}  // namespace

// The ranks agree on a stop signal with one small all-reduce: 0, or the signal to stop for.
int Trainer::agreed_stop_signal() {
  auto sig = torch::tensor({static_cast<int64_t>(stop_signal())});
  grid_.world().all_reduce(sig, parallel::ReduceOp::max);
  return static_cast<int>(sig.item<int64_t>());
}

std::pair<double, int64_t> Trainer::forward_backward(const std::vector<int64_t>& rows,
                                                     GradientSync& sync) {
  auto [ids, labels] = gather(train_, rows);
  // Every scored target of the global batch counts once: loss = Σ token losses / N.
  auto scored_t = labels.narrow(1, 1, labels.size(1) - 1)
                      .ne(data::kIgnore)
                      .sum()
                      .to(torch::kInt64)
                      .reshape({1});
  grid_.dp().all_reduce(scored_t);
  const double scored = static_cast<double>(std::max<int64_t>(1, scored_t.item<int64_t>()));
  double loss_sum = 0;  // this replica's share, on the last stage
  auto stage = model_stage(model_, ids, labels, config_.optim.micro_batch_size,
                           [&loss_sum, scored](int64_t, const torch::Tensor& losses) {
                             auto loss = losses.sum() / scored;
                             loss_sum += loss.item<double>();  // the language-model loss alone
                             return loss;
                           });
  stage.before_backward = [&sync, last = stage.micro_batches - 1](int64_t i) {
    if (i == last) sync.arm();
  };
  parallel::train_1f1b(stage, grid_.pp());
  auto loss_t = torch::tensor({loss_sum}, torch::kFloat64);
  grid_.pp().all_reduce(loss_t);  // only the last stage contributes
  grid_.dp().all_reduce(loss_t);
  return {loss_t.item<double>(), ids.numel() * grid_.layout().dp};
}

TrainSummary Trainer::run() {
  const auto& o = config_.optim;
  const bool root = grid_.rank() == 0;
  check_batch_split(o, grid_.layout());
  data::Sampler sampler(train_.rows(), o.global_batch_size, grid_.dp_rank(), grid_.layout().dp,
                        config_.run.seed, config_.data.shuffle);
  const auto params = adapters::trainable_parameters(model_);
  if (params.empty() && grid_.world_size() == 1)
    throw Error("nothing to train", "[adapter] method = " + config_.adapter.method,
                "attach an adapter or use method = \"full\"");
  const adapters::Method& method = adapters::method(config_.adapter.method);
  const adapters::ParameterGroups groups = method.groups(params);
  Optimizers optimizers(config_, groups, grid_, total_steps_);
  check_xi_schedule(config_, optimizers, !held_out_.ids.empty(), root);
  const Schedule schedule =
      Schedule::make(o.lr, total_steps_, o.warmup_ratio, o.schedule, o.min_lr_ratio);
  GradientSync sync(model_, grid_, params, groups.gates, config_.parallel.dp_overlap);
  TrainSummary summary;
  summary.trainable_parameters = entries_in_model(model_, grid_, params);
  CheckpointKeeper checkpoints(config_, model_, grid_, run_dir_, checkpointing_, identity_,
                               mask_targets_);
  // Taken from the base before a checkpoint replaces its weights.
  adapters::BaseZeros base_zeros;
  if (method.keeps_base_zeros(config_.adapter))
    base_zeros = adapters::BaseZeros(model_, method.targets(config_.adapter));
  Progress progress;
  if (!resume_.empty()) progress = checkpoints.restore(resume_, optimizers, sampler);
  const int64_t start_step = progress.step, tokens_at_start = progress.tokens;
  double last_loss = progress.loss;  // of the last step that updated the parameters
  ProgressReport report(config_, model_, grid_, train_, held_out_, run_dir_, total_steps_,
                        start_step, !resume_.empty(), method.keeps_zero_pattern());

  model_->train();
  grid_.reset_stats();
  summary.peak_from_first_step = reset_peak_resident();
  report.start();
  int64_t bad_in_a_row = 0;
  for (int64_t step = start_step; step < total_steps_; ++step) {
    const auto [loss, tokens] = forward_backward(sampler.next(), sync);
    sync.reduce();
    optimizers.add_l1_gradient();  // once, on the rank whose gates agree_gates() spreads
    const double lr = schedule.lr(step);
    double grad_norm = 0;
    if (!std::isfinite(loss)) {  // skipped, and counted; too many in a row end the run
      ++progress.skipped_steps;
      if (++bad_in_a_row >= o.max_bad_steps)
        throw Error(std::to_string(bad_in_a_row) + " non-finite losses in a row (last at step " +
                        std::to_string(step + 1) + ")",
                    "training", "lower optim.lr, check the data, or use fp32");
      if (root)
        std::fprintf(stderr, "warning: step %lld: loss is %f, step skipped\n",
                     static_cast<long long>(step + 1), loss);
    } else {
      bad_in_a_row = 0;
      sync.agree_gates();
      base_zeros.clear_gradients();
      grad_norm = sync.clip(o.grad_clip);
      optimizers.step(step, lr);
      base_zeros.impose();
      last_loss = loss;
    }
    optimizers.zero_grad();
    progress.step = step + 1;
    progress.loss = loss;
    progress.tokens += tokens;
    if (on_step) on_step(step, loss);
    inject_faults(grid_, progress.step);

    const bool last = progress.step == total_steps_;
    report.after_step({step, loss, lr, grad_norm, tokens, progress.tokens, progress.skipped_steps},
                      optimizers);
    if (optimizers.xi_phase_ends(step)) report.xi_phase(step, optimizers);
    const bool saved = checkpoints.due(progress.step, last);
    if (saved) checkpoints.save(progress, optimizers, sampler);
    if (stop_signal && !last) {
      if (const int sig = agreed_stop_signal()) {
        if (checkpoints.enabled() && !saved) checkpoints.save(progress, optimizers, sampler);
        throw Stopped("stopped by signal " + std::to_string(sig) + " after step " +
                          std::to_string(progress.step) +
                          (checkpoints.enabled() ? ", checkpoint saved" : ""),
                      run_dir_, "run the same command again to continue from there");
      }
    }
  }
  if (optimizers.xi_phases() && root)
    std::printf("SoRA memorisation/generalisation curve: spartan runs plot %s\n", run_dir_.c_str());
  summary.steps = progress.step > start_step ? progress.step : 0;
  summary.skipped_steps = progress.skipped_steps;
  summary.last_loss = last_loss;
  summary.seconds = report.seconds();
  summary.tokens_per_s =
      summary.seconds > 0 ? (progress.tokens - tokens_at_start) / summary.seconds : 0.0;
  summary.comm = grid_.total_stats();
  summary.comm_share = summary.seconds > 0 ? summary.comm.seconds / summary.seconds : 0.0;
  summary.peak_resident_bytes = gather_per_rank(grid_, peak_resident_bytes());
  model_->eval();
  return summary;
}

}  // namespace spartan::trainer
