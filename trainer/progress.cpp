#include "trainer/progress.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "adapters/adapter.h"
#include "common/memory_use.h"
#include "trainer/eval.h"

namespace spartan::trainer {
ProgressReport::ProgressReport(const Config& config, model::Llama& model, parallel::Grid& grid,
                               const data::Sequences& train, const data::Sequences& held_out,
                               const std::string& run_dir, int64_t total_steps, int64_t start_step,
                               bool resumed, bool keeps_zero_pattern)
    : config_(config),
      model_(model),
      grid_(grid),
      train_(train),
      held_out_(held_out),
      total_steps_(total_steps),
      start_step_(start_step),
      keeps_zero_pattern_(keeps_zero_pattern) {
  // A resumed run drops what the interrupted one logged after its checkpoint.
  if (grid_.rank() != 0) return;
  log_ = std::make_unique<RunLog>(run_dir, start_step, config.run.tensorboard);
  if (resumed) log_->write({{"step", start_step}, {"event", "resumed"}});
}

void ProgressReport::start() { start_ = last_log_ = Clock::now(); }

double ProgressReport::seconds() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

void ProgressReport::after_step(const StepRecord& r, const Optimizers& optimizers) {
  tokens_since_log_ += r.tokens;
  const int64_t done = r.step + 1;
  const bool last = done == total_steps_;
  if (done % config_.run.log_every != 0 && !last) return;
  const int64_t nonzero = optimizers.nonzero_gates();
  EvalResult ev;
  const bool evaluate =
      !held_out_.ids.empty() && config_.eval.every > 0 && (done % config_.eval.every == 0 || last);
  int64_t zeros_lost = 0;  // SPP: base zeros the merged weights would not keep (want 0)
  if (evaluate) {
    ev = evaluate_rows(model_, held_out_, config_.optim.micro_batch_size, config_.eval.max_batches,
                       &grid_);
    if (keeps_zero_pattern_) {
      auto t = torch::tensor({adapters::zero_pattern_changes(model_).lost}, torch::kInt64);
      grid_.tp().all_reduce(t);  // the shards of a stage, then the stages
      grid_.pp().all_reduce(t);
      zeros_lost = t.item<int64_t>();
    }
  }
  const auto now = Clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double window = std::chrono::duration<double>(now - last_log_).count();
  const double comm = grid_.total_stats().seconds;
  const double share = window > 0 ? (comm - comm_at_log_) / window : 0.0;
  comm_at_log_ = comm;
  const double tps = window > 0 ? tokens_since_log_ / window : 0.0;
  const double eta = elapsed / (done - start_step_) * (total_steps_ - done);
  const double memory_gib = resident_bytes() / double(1ull << 30);
  last_log_ = now;
  tokens_since_log_ = 0;
  if (grid_.rank() != 0) return;

  std::string ranks, comm_text;
  if (optimizers.has_gates())
    ranks = " | ranks " + std::to_string(nonzero) + "/" + std::to_string(optimizers.gate_entries());
  if (grid_.world_size() > 1) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " | comm %.0f%%", 100.0 * share);
    comm_text = buf;
  }
  std::printf(
      "step %lld/%lld | loss %.4f | lr %.2e | grad norm %.3f%s | %.0f tok/s%s | "
      "ETA %s | mem %.2f GiB\n",
      static_cast<long long>(done), static_cast<long long>(total_steps_), r.loss, r.lr, r.grad_norm,
      ranks.c_str(), tps, comm_text.c_str(), format_duration(eta, 0).c_str(), memory_gib);
  if (evaluate) std::printf("           held-out loss %.4f, perplexity %.2f\n", ev.loss, ev.ppl);
  std::fflush(stdout);
  nlohmann::json rec = {{"step", done},
                        {"loss", r.loss},
                        {"lr", r.lr},
                        {"grad_norm", r.grad_norm},
                        {"tokens", r.tokens_seen},
                        {"tokens_per_s", tps},
                        {"elapsed_s", elapsed},
                        {"skipped_steps", r.skipped_steps},
                        {"memory_gib", memory_gib}};
  if (optimizers.has_gates()) {
    rec["gate_nonzero"] = nonzero;
    rec["gate_lr"] = optimizers.gate_lr(r.lr);
    rec["xi"] = optimizers.xi(r.step);
  }
  if (grid_.world_size() > 1) {
    rec["comm_share"] = share;
    rec["comm_bytes"] = {{"tp", grid_.tp().stats().bytes},
                         {"pp", grid_.pp().stats().bytes},
                         {"dp", grid_.dp().stats().bytes}};
  }
  if (evaluate) {
    rec["eval_loss"] = ev.loss;
    rec["eval_ppl"] = ev.ppl;
    if (keeps_zero_pattern_) rec["spp_zeros_lost"] = zeros_lost;
  }
  log_->write(rec);
}

void ProgressReport::xi_phase(int64_t step, const Optimizers& optimizers) {
  const double xi = optimizers.xi(step);
  const int64_t nonzero = optimizers.nonzero_gates();
  // Memorisation: loss on as many training rows as there are held-out rows.
  const int64_t batch = config_.optim.micro_batch_size;
  const int64_t rows = held_out_.rows();
  const EvalResult held_out =
      evaluate_rows(model_, held_out_, batch, config_.eval.max_batches, &grid_);
  const EvalResult train = evaluate_rows(model_, train_, batch, (rows + batch - 1) / batch, &grid_);
  model_->train();
  if (grid_.rank() != 0) return;
  std::printf(
      "           xi %g: %lld non-zero gate entries, train loss %.4f, held-out loss "
      "%.4f\n",
      xi, static_cast<long long>(nonzero), train.loss, held_out.loss);
  std::fflush(stdout);
  log_->write({{"step", step + 1},
               {"event", "xi_phase"},
               {"xi", xi},
               {"gate_nonzero", nonzero},
               {"train_loss", train.loss},
               {"eval_loss", held_out.loss}});
}

}  // namespace spartan::trainer
