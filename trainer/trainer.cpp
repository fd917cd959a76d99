#include "trainer/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "adapters/adapter.h"
#include "common/error.h"
#include "data/sampler.h"
#include "trainer/optimizer.h"
#include "trainer/schedule.h"
#include "trainer/sora_gates.h"

namespace spartan::trainer {
namespace {

using Clock = std::chrono::steady_clock;

std::string duration(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%.0fs", s);
  return buf;
}

}  // namespace

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

int64_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

Trainer::Trainer(const Config& config, model::Llama& model, const data::Sequences& train,
                 const data::Sequences& held_out, std::string run_dir)
    : config_(config), model_(model), train_(train), held_out_(held_out),
      run_dir_(std::move(run_dir)) {
  const auto& o = config.optim;
  const int64_t per_epoch = train.rows() / o.global_batch_size;
  total_steps_ = o.max_steps > 0 ? o.max_steps : per_epoch * o.epochs;
}

TrainSummary Trainer::run() {
  const auto& o = config_.optim;
  const int64_t dp = config_.parallel.dp;
  data::Sampler sampler(train_.rows(), o.global_batch_size, /*dp_rank=*/0, dp, config_.run.seed,
                        config_.data.shuffle);
  const auto params = adapters::trainable_parameters(model_);
  if (params.empty())
    throw Error("nothing to train", "[adapter] method = " + config_.adapter.method,
                "attach an adapter or use method = \"full\"");
  // SoRA gates have an optimizer of their own (AdamW + threshold); everything else uses AdamW.
  model::NamedTensors gates, others;
  for (const auto& np : params) (adapters::is_sora_gate(np.first) ? gates : others).push_back(np);
  AdamW optimizer(others, decay_matrices(others), {o.beta1, o.beta2, o.eps, o.weight_decay});
  const auto& sora = config_.adapter.sora;
  std::unique_ptr<GateOptimizer> gate_optimizer;
  if (!gates.empty()) {
    gate_optimizer = std::make_unique<GateOptimizer>(gates, sora.lambda2, sora.threshold,
                                                     o.beta1, o.beta2);
    std::printf("SoRA gates: %lld entries, threshold \"%s\" with xi = %g, L1 weight %g\n",
                static_cast<long long>(gate_optimizer->total()), sora.threshold.c_str(),
                sora.lambda2, sora.lambda1);
  }
  const Schedule schedule =
      Schedule::make(o.lr, total_steps_, o.warmup_ratio, o.schedule, o.min_lr_ratio);

  TrainSummary summary;
  for (const auto& [name, p] : params) summary.trainable_parameters += p.numel();
  std::ofstream metrics(run_dir_ + "/metrics.jsonl", std::ios::app);
  if (!metrics)
    throw Error("cannot write metrics.jsonl", run_dir_, "check that the run folder is writable");

  model_->train();
  const auto start = Clock::now();
  auto last_log = start;
  int64_t tokens_seen = 0, tokens_since_log = 0, bad_in_a_row = 0;
  for (int64_t step = 0; step < total_steps_; ++step) {
    const std::vector<int64_t> rows = sampler.next();
    auto [ids, labels] = gather(train_, rows);
    // Every scored target of the global batch counts once: loss = Σ token losses / N.
    const int64_t scored = labels.narrow(1, 1, labels.size(1) - 1).ne(data::kIgnore).sum()
                               .item<int64_t>();
    double loss_value = 0;
    for (int64_t m0 = 0; m0 < ids.size(0); m0 += o.micro_batch_size) {
      const int64_t mb = std::min<int64_t>(o.micro_batch_size, ids.size(0) - m0);
      auto logits = model_->forward(ids.narrow(0, m0, mb));
      auto loss = model::token_losses(logits, labels.narrow(0, m0, mb)).sum() /
                  static_cast<double>(std::max<int64_t>(1, scored));
      loss_value += loss.item<double>();  // reported: the language-model loss alone
      if (m0 == 0 && !gates.empty()) loss = loss + l1_penalty(gates, sora.lambda1);
      loss.backward();
    }
    const double lr = schedule.lr(step);
    double grad_norm = 0;
    if (!std::isfinite(loss_value)) {
      ++summary.skipped_steps;
      if (++bad_in_a_row >= o.max_bad_steps)
        throw Error(std::to_string(bad_in_a_row) + " non-finite losses in a row (last at step " +
                        std::to_string(step + 1) + ")",
                    "training", "lower optim.lr, check the data, or use fp32");
      std::fprintf(stderr, "warning: step %lld: loss is %f, step skipped\n",
                   static_cast<long long>(step + 1), loss_value);
    } else {
      bad_in_a_row = 0;
      grad_norm = clip_grad_norm(params, o.grad_clip);
      optimizer.step(lr);
      if (gate_optimizer) gate_optimizer->step(sora.gate_lr > 0 ? lr * sora.gate_lr / o.lr : lr);
      summary.last_loss = loss_value;
    }
    optimizer.zero_grad();
    if (gate_optimizer) gate_optimizer->zero_grad();
    const int64_t step_tokens = ids.numel();
    tokens_seen += step_tokens;
    tokens_since_log += step_tokens;
    summary.steps = step + 1;
    if (on_step) on_step(step, loss_value);

    const bool last = step + 1 == total_steps_;
    if ((step + 1) % config_.run.log_every == 0 || last) {
      const auto now = Clock::now();
      const double elapsed = std::chrono::duration<double>(now - start).count();
      const double window = std::chrono::duration<double>(now - last_log).count();
      const double tps = window > 0 ? tokens_since_log / window : 0.0;
      const double eta = elapsed / (step + 1) * (total_steps_ - step - 1);
      std::string ranks;
      if (gate_optimizer)
        ranks = " | ranks " + std::to_string(gate_optimizer->nonzero()) + "/" +
                std::to_string(gate_optimizer->total());
      std::printf("step %lld/%lld | loss %.4f | lr %.2e | grad norm %.3f%s | %.0f tok/s | ETA %s | "
                  "mem %.2f GiB\n",
                  static_cast<long long>(step + 1), static_cast<long long>(total_steps_),
                  loss_value, lr, grad_norm, ranks.c_str(), tps, duration(eta).c_str(),
                  resident_bytes() / double(1ull << 30));
      std::fflush(stdout);
      nlohmann::json rec = {{"step", step + 1},           {"loss", loss_value},
                            {"lr", lr},                   {"grad_norm", grad_norm},
                            {"tokens", tokens_seen},      {"tokens_per_s", tps},
                            {"elapsed_s", elapsed},       {"skipped_steps", summary.skipped_steps}};
      if (gate_optimizer) rec["gate_nonzero"] = gate_optimizer->nonzero();
      if (!held_out_.ids.empty() && config_.eval.every > 0 &&
          ((step + 1) % config_.eval.every == 0 || last)) {
        EvalResult ev = evaluate_rows(model_, held_out_, o.micro_batch_size, config_.eval.max_batches);
        rec["eval_loss"] = ev.loss;
        rec["eval_ppl"] = ev.ppl;
        std::printf("           held-out loss %.4f, perplexity %.2f\n", ev.loss, ev.ppl);
      }
      metrics << rec.dump() << "\n";
      metrics.flush();
      last_log = now;
      tokens_since_log = 0;
    }
  }
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  summary.tokens_per_s = summary.seconds > 0 ? tokens_seen / summary.seconds : 0.0;
  model_->eval();
  return summary;
}

}  // namespace spartan::trainer
