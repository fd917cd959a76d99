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
#include "adapters/method.h"
#include "checkpoints/checkpoint.h"
#include "common/error.h"
#include "common/memory_use.h"
#include "data/sampler.h"
#include "parallel/pipeline.h"
#include "trainer/distributed.h"
#include "trainer/optimizer.h"
#include "trainer/run_log.h"
#include "trainer/schedule.h"
#include "trainer/sora_gates.h"
#include "trainer/stage.h"

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

namespace {
// max_steps, or whole global batches over the epochs.
int64_t steps_of(const OptimConfig& o, int64_t rows) {
  return o.max_steps > 0 ? o.max_steps : rows / o.global_batch_size * o.epochs;
}
}  // namespace

Trainer::Trainer(const Config& config, model::Llama& model, const data::Sequences& train,
                 const data::Sequences& held_out, std::string run_dir)
    : config_(config), model_(model), own_grid_(parallel::Grid::solo()), grid_(*own_grid_),
      train_(train), held_out_(held_out), run_dir_(std::move(run_dir)),
      total_steps_(steps_of(config.optim, train.rows())) {}

Trainer::Trainer(const Config& config, model::Llama& model, parallel::Grid& grid,
                 const data::Sequences& train, const data::Sequences& held_out,
                 std::string run_dir)
    : config_(config), model_(model), grid_(grid), train_(train), held_out_(held_out),
      run_dir_(std::move(run_dir)), total_steps_(steps_of(config.optim, train.rows())) {}

void Trainer::enable_checkpoints(nlohmann::json identity, std::vector<model::Proj> mask_targets) {
  checkpointing_ = true;
  identity_ = std::move(identity);
  mask_targets_ = std::move(mask_targets);
}

namespace {

at::Generator& cpu_generator() {
  static at::Generator g = at::detail::getDefaultCPUGenerator();
  return g;
}

// The CPU generator's state as int64 (one entry per byte), and back.
torch::Tensor rng_state() {
  std::lock_guard<std::mutex> lock(cpu_generator().mutex());
  return cpu_generator().get_state().to(torch::kInt64);
}

void set_rng_state(const torch::Tensor& s) {
  std::lock_guard<std::mutex> lock(cpu_generator().mutex());
  cpu_generator().set_state(s.to(torch::kUInt8));
}

// The first key whose value differs between this run's identity `a` and a checkpoint's `b`, or
// "". A key of `a` that `b` lacks was not recorded by the version that saved `b` (the base's
// values digest came later): it is not compared.
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b) {
  for (const auto& [k, v] : a.items())
    if (b.contains(k) && b[k] != v) return k;
  for (const auto& [k, v] : b.items())
    if (!a.contains(k)) return k;
  return "";
}

}  // namespace

TrainSummary Trainer::run() {
  const auto& o = config_.optim;
  const bool root = grid_.rank() == 0;
  const int64_t dp = grid_.layout().dp;
  if (o.global_batch_size % (o.micro_batch_size * dp) != 0)
    throw UsageError("optim.global_batch_size = " + std::to_string(o.global_batch_size) +
                         " is not a multiple of micro_batch_size x dp",
                     "[optim]", "make the global batch a multiple of micro_batch_size x dp");
  const int64_t micro_batches = o.global_batch_size / (o.micro_batch_size * dp);
  if (micro_batches < grid_.layout().pp)
    throw UsageError(std::to_string(micro_batches) + " micro-batches per step cannot fill " +
                         std::to_string(grid_.layout().pp) + " pipeline stages",
                     "[optim] global_batch_size / (micro_batch_size x dp)",
                     "use at least pp micro-batches per DP replica");
  data::Sampler sampler(train_.rows(), o.global_batch_size, grid_.dp_rank(), dp,
                        config_.run.seed, config_.data.shuffle);
  const auto params = adapters::trainable_parameters(model_);
  if (params.empty() && grid_.world_size() == 1)
    throw Error("nothing to train", "[adapter] method = " + config_.adapter.method,
                "attach an adapter or use method = \"full\"");
  // SoRA gates have an optimizer of their own (AdamW + threshold); everything else uses AdamW.
  const adapters::Method& method = adapters::method(config_.adapter.method);
  const adapters::ParameterGroups groups = method.groups(params);
  const model::NamedTensors &others = groups.main, &gates = groups.gates;
  const bool keeps_zero_pattern = method.keeps_zero_pattern();
  AdamW optimizer(others, decay_matrices(others), {o.beta1, o.beta2, o.eps, o.weight_decay});
  const auto& sora = config_.adapter.sora;
  std::unique_ptr<GateOptimizer> gate_optimizer;
  // Gate entries over the whole model: a stage's gates are replicated over TP and DP.
  auto whole_model = [this](int64_t n) {  // over the stages
    auto t = torch::tensor({n}, torch::kInt64);
    grid_.pp().all_reduce(t);
    return t.item<int64_t>();
  };
  int64_t gate_entries = 0;
  for (const auto& [name, g] : gates) gate_entries += g.numel();
  const int64_t total_gate_entries = whole_model(gate_entries);
  if (total_gate_entries > 0) {
    gate_optimizer = std::make_unique<GateOptimizer>(
        gates, sora.lambda2, sora.threshold, o.beta1, o.beta2,
        sora.adam == "torch" ? AdamWOptions::Form::torch : AdamWOptions::Form::hf);
    if (root)
      std::printf("SoRA gates: %lld entries, %s AdamW, threshold \"%s\" with xi = %g, L1 weight "
                  "%g\n",
                  static_cast<long long>(total_gate_entries), sora.adam.c_str(),
                  sora.threshold.c_str(), sora.lambda2, sora.lambda1);
  }
  const XiSchedule xi_schedule(sora.schedule, sora.lambda2, sora.max_lambda, sora.lambda_num,
                               total_steps_);
  const bool xi_phases = gate_optimizer && xi_schedule.active();
  if (xi_phases) {
    if (held_out_.ids.empty())
      throw UsageError("the SoRA xi schedule logs held-out loss, but there is no held-out data",
                       "[data] held_out_fraction", "set held_out_fraction > 0");
    if (root) {
      std::printf("SoRA xi schedule \"%s\":", sora.schedule.c_str());
      for (double xi : xi_schedule.values()) std::printf(" %g", xi);
      std::printf(", one phase each\n");
    }
  }
  const Schedule schedule =
      Schedule::make(o.lr, total_steps_, o.warmup_ratio, o.schedule, o.min_lr_ratio);
  GradientSync sync(model_, grid_, params, gates);

  TrainSummary summary;
  summary.trainable_parameters = entries_in_model(model_, grid_, params);
  // What a checkpoint holds of this rank: trained tensors, their AdamW moments, the base's zero
  // pattern digests, this stage's RNG state (TP ranks side by side).
  const auto masks = mask_targets_.empty()
                         ? std::vector<checkpoints::Entry>{}
                         : checkpoints::mask_digests(model_, grid_, mask_targets_);
  auto optimizer_entries = [this](const model::NamedTensors& ps, AdamW& opt,
                                  std::vector<checkpoints::Entry>& out) {
    for (size_t i = 0; i < ps.size(); ++i) {
      const auto pl = model_->placement(ps[i].first);
      out.push_back({"params/" + ps[i].first, ps[i].second, pl});
      out.push_back({"optim/" + ps[i].first + "/exp_avg", opt.exp_avg()[i], pl});
      out.push_back({"optim/" + ps[i].first + "/exp_avg_sq", opt.exp_avg_sq()[i], pl});
    }
  };
  const std::string rng_key = "rng/pp" + std::to_string(grid_.pp_rank());
  const model::TpPlacement by_tp_rank{model::TpPlacement::sharded, 0};
  int64_t start_step = 0, tokens_seen = 0;

  if (!resume_.empty()) {
    checkpoints::Checkpoint ck(resume_);
    const auto& m = ck.manifest();
    if (!identity_.is_null()) {
      const std::string diff = first_difference(identity_, m["identity"]);
      if (!diff.empty())
        throw UsageError("the checkpoint was saved for another " + diff + " than this run's",
                         resume_ + "/manifest.json",
                         "resume with the same base model and settings, or start a new run "
                         "(another run.name)");
    }
    for (const auto& e : masks)
      if (!torch::equal(ck.local(e.key, e.placement, e.local, grid_), e.local))
        throw UsageError("the base model's zero pattern of " + e.key.substr(6) +
                             " differs from the checkpoint's",
                         resume_, "resume on the pruned base the run was started with");
    torch::NoGradGuard no_grad;
    auto restore = [&](const model::NamedTensors& ps, AdamW& opt, const std::string& steps) {
      std::vector<torch::Tensor> avg, avg_sq;
      for (const auto& [name, p] : ps) {
        const auto pl = model_->placement(name);
        p.copy_(ck.local("params/" + name, pl, p, grid_));
        avg.push_back(ck.local("optim/" + name + "/exp_avg", pl, p, grid_));
        avg_sq.push_back(ck.local("optim/" + name + "/exp_avg_sq", pl, p, grid_));
      }
      opt.load_state(avg, avg_sq, m["state"].value(steps, int64_t(0)));
    };
    restore(others, optimizer, "adam_steps");
    if (gate_optimizer) restore(gates, gate_optimizer->adam(), "gate_adam_steps");
    const auto& st = m["state"];
    sampler.restore({st["sampler_epoch"].get<int64_t>(), st["sampler_step"].get<int64_t>()});
    start_step = st["step"].get<int64_t>();
    tokens_seen = st["tokens"].get<int64_t>();
    summary.skipped_steps = st.value("skipped_steps", int64_t(0));
    summary.last_loss = checkpoints::manifest_loss(st);  // non-finite losses round-trip
    // The RNG stream continues exactly only on the layout it was saved from.
    const auto& topo = m["topology"];
    if (topo["tp"] == grid_.layout().tp && topo["pp"] == grid_.layout().pp && ck.has(rng_key))
      set_rng_state(ck.local(rng_key, by_tp_rank, rng_state(), grid_));
    if (root)
      std::printf("resumed from %s at step %lld\n", resume_.c_str(),
                  static_cast<long long>(start_step));
  }
  // metrics.jsonl and TensorBoard; a resumed run drops what the interrupted one logged after its
  // checkpoint.
  std::unique_ptr<RunLog> log;
  if (root) {
    log = std::make_unique<RunLog>(run_dir_, start_step, config_.run.tensorboard);
    if (!resume_.empty()) log->write({{"step", start_step}, {"event", "resumed"}});
  }
  auto save_checkpoint = [&](int64_t steps_done, double loss) {
    checkpoints::SaveRequest req;
    req.run_dir = run_dir_;
    req.step = steps_done;
    req.keep = config_.checkpoint.keep;
    optimizer_entries(others, optimizer, req.entries);
    if (gate_optimizer) optimizer_entries(gates, gate_optimizer->adam(), req.entries);
    req.entries.insert(req.entries.end(), masks.begin(), masks.end());
    req.entries.push_back({rng_key, rng_state(), by_tp_rank});
    const auto pos = sampler.position();
    req.state = {{"step", steps_done},
                 {"tokens", tokens_seen},
                 {"sampler_epoch", pos.epoch},
                 {"sampler_step", pos.step},
                 {"adam_steps", optimizer.steps()},
                 {"gate_adam_steps", gate_optimizer ? gate_optimizer->adam().steps() : 0},
                 {"skipped_steps", summary.skipped_steps},
                 {"loss", checkpoints::loss_to_json(loss)}};
    req.identity = identity_;
    const std::string folder = checkpoints::save(grid_, req);
    if (root) std::printf("saved checkpoint %s\n", folder.c_str());
    std::fflush(stdout);
    if (root && checkpoints::fault("kill-after-save", steps_done)) std::raise(SIGKILL);
  };

  const int64_t tokens_at_start = tokens_seen;
  model_->train();
  grid_.reset_stats();
  const auto start = Clock::now();
  auto last_log = start;
  double comm_at_log = 0;
  int64_t tokens_since_log = 0, bad_in_a_row = 0;
  // Only one rank of a TP group and DP replica 0 adds the L1 term's gradient: the gradient sums
  // over TP and DP would count it again.
  const bool adds_l1 = grid_.tp_rank() == 0 && grid_.dp_rank() == 0 && !gates.empty();
  for (int64_t step = start_step; step < total_steps_; ++step) {
    const std::vector<int64_t> rows = sampler.next();
    auto [ids, labels] = gather(train_, rows);
    // Every scored target of the global batch counts once: loss = Σ token losses / N.
    auto scored_t = labels.narrow(1, 1, labels.size(1) - 1).ne(data::kIgnore).sum()
                        .to(torch::kInt64).reshape({1});
    grid_.dp().all_reduce(scored_t);
    const double scored = static_cast<double>(std::max<int64_t>(1, scored_t.item<int64_t>()));
    double loss_sum = 0;  // this replica's share, on the last stage
    auto stage = model_stage(model_, ids, labels, o.micro_batch_size,
                             [&loss_sum, scored](int64_t, const torch::Tensor& losses) {
                               auto loss = losses.sum() / scored;
                               loss_sum += loss.item<double>();  // the language-model loss alone
                               return loss;
                             });
    parallel::train_1f1b(stage, grid_.pp());
    if (adds_l1) {
      const double share = double(gate_entries) / double(total_gate_entries);
      l1_penalty(gates, sora.lambda1 * share).backward();
    }
    auto loss_t = torch::tensor({loss_sum}, torch::kFloat64);
    grid_.pp().all_reduce(loss_t);  // only the last stage contributes
    grid_.dp().all_reduce(loss_t);
    const double loss_value = loss_t.item<double>();

    const double lr = schedule.lr(step);
    const double gate_lr = sora.gate_lr > 0 ? lr * sora.gate_lr / o.lr : lr;
    double grad_norm = 0;
    if (!std::isfinite(loss_value)) {
      ++summary.skipped_steps;
      if (++bad_in_a_row >= o.max_bad_steps)
        throw Error(std::to_string(bad_in_a_row) + " non-finite losses in a row (last at step " +
                        std::to_string(step + 1) + ")",
                    "training", "lower optim.lr, check the data, or use fp32");
      if (root)
        std::fprintf(stderr, "warning: step %lld: loss is %f, step skipped\n",
                     static_cast<long long>(step + 1), loss_value);
    } else {
      bad_in_a_row = 0;
      sync.reduce();
      grad_norm = sync.clip(o.grad_clip);
      optimizer.step(lr);
      if (gate_optimizer) {
        gate_optimizer->set_xi(xi_schedule.xi(step));
        gate_optimizer->step(gate_lr);
      }
      summary.last_loss = loss_value;
    }
    optimizer.zero_grad();
    if (gate_optimizer) gate_optimizer->zero_grad();
    const int64_t step_tokens = ids.numel() * dp;
    tokens_seen += step_tokens;
    tokens_since_log += step_tokens;
    summary.steps = step + 1;
    if (on_step) on_step(step, loss_value);
    if (checkpoints::fault(("throw-rank" + std::to_string(grid_.rank())).c_str(), step + 1))
      throw Error("injected failure (SPARTAN_FAULT) at step " + std::to_string(step + 1),
                  grid_.coordinates(), "unset SPARTAN_FAULT");
    // A rank that hangs without failing (for the collective timeout's test): it stops calling
    // into MPI, its peers wait in their next collective.
    if (checkpoints::fault(("hang-rank" + std::to_string(grid_.rank())).c_str(), step + 1))
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));

    const bool last = step + 1 == total_steps_;
    if ((step + 1) % config_.run.log_every == 0 || last) {
      int64_t nonzero = gate_optimizer ? whole_model(gate_optimizer->nonzero()) : 0;
      EvalResult ev;
      const bool evaluate = !held_out_.ids.empty() && config_.eval.every > 0 &&
                            ((step + 1) % config_.eval.every == 0 || last);
      int64_t zeros_lost = 0;  // SPP: base zeros the merged weights would not keep (want 0)
      if (evaluate) {
        ev = evaluate_rows(model_, held_out_, o.micro_batch_size, config_.eval.max_batches,
                           &grid_);
        if (keeps_zero_pattern) {
          auto t = torch::tensor({adapters::zero_pattern_changes(model_).lost}, torch::kInt64);
          grid_.tp().all_reduce(t);  // the shards of a stage, then the stages
          grid_.pp().all_reduce(t);
          zeros_lost = t.item<int64_t>();
        }
      }
      const auto now = Clock::now();
      const double elapsed = std::chrono::duration<double>(now - start).count();
      const double window = std::chrono::duration<double>(now - last_log).count();
      const double comm = grid_.total_stats().seconds;
      const double share = window > 0 ? (comm - comm_at_log) / window : 0.0;
      comm_at_log = comm;
      const double tps = window > 0 ? tokens_since_log / window : 0.0;
      const double eta = elapsed / (step + 1 - start_step) * (total_steps_ - step - 1);
      const double memory_gib = resident_bytes() / double(1ull << 30);
      if (root) {
        std::string ranks, comm_text;
        if (gate_optimizer)
          ranks = " | ranks " + std::to_string(nonzero) + "/" + std::to_string(total_gate_entries);
        if (grid_.world_size() > 1) {
          char buf[32];
          std::snprintf(buf, sizeof buf, " | comm %.0f%%", 100.0 * share);
          comm_text = buf;
        }
        std::printf("step %lld/%lld | loss %.4f | lr %.2e | grad norm %.3f%s | %.0f tok/s%s | "
                    "ETA %s | mem %.2f GiB\n",
                    static_cast<long long>(step + 1), static_cast<long long>(total_steps_),
                    loss_value, lr, grad_norm, ranks.c_str(), tps, comm_text.c_str(),
                    duration(eta).c_str(), memory_gib);
        if (evaluate)
          std::printf("           held-out loss %.4f, perplexity %.2f\n", ev.loss, ev.ppl);
        std::fflush(stdout);
        nlohmann::json rec = {{"step", step + 1},           {"loss", loss_value},
                              {"lr", lr},                   {"grad_norm", grad_norm},
                              {"tokens", tokens_seen},      {"tokens_per_s", tps},
                              {"elapsed_s", elapsed},
                              {"skipped_steps", summary.skipped_steps},
                              {"memory_gib", memory_gib}};
        if (gate_optimizer) {
          rec["gate_nonzero"] = nonzero;
          rec["gate_lr"] = gate_lr;
          rec["xi"] = xi_schedule.xi(step);
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
          if (keeps_zero_pattern) rec["spp_zeros_lost"] = zeros_lost;
        }
        log->write(rec);
      }
      last_log = now;
      tokens_since_log = 0;
    }
    if (xi_phases && xi_schedule.phase_ends(step))
      log_xi_phase(step, xi_schedule.xi(step), whole_model(gate_optimizer->nonzero()), log.get());
    const int64_t every = config_.checkpoint.every;
    const bool save = checkpointing_ && ((every > 0 && (step + 1) % every == 0) || last);
    if (save) save_checkpoint(step + 1, loss_value);
    if (stop_signal && !last) {
      auto sig = torch::tensor({static_cast<int64_t>(stop_signal())});
      grid_.world().all_reduce(sig, parallel::ReduceOp::max);
      if (sig.item<int64_t>() != 0) {
        if (checkpointing_ && !save) save_checkpoint(step + 1, loss_value);
        throw Stopped("stopped by signal " + std::to_string(sig.item<int64_t>()) + " after step " +
                          std::to_string(step + 1) + (checkpointing_ ? ", checkpoint saved" : ""),
                      run_dir_, "run the same command again to continue from there");
      }
    }
  }
  if (xi_phases && root)
    std::printf("SoRA memorisation/generalisation curve: spartan runs plot %s\n", run_dir_.c_str());
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  summary.tokens_per_s =
      summary.seconds > 0 ? (tokens_seen - tokens_at_start) / summary.seconds : 0.0;
  summary.comm = grid_.total_stats();
  summary.comm_share = summary.seconds > 0 ? summary.comm.seconds / summary.seconds : 0.0;
  model_->eval();
  return summary;
}

void Trainer::log_xi_phase(int64_t step, double xi, int64_t nonzero, RunLog* log) {
  // Memorisation: loss on as many training rows as there are held-out rows.
  const int64_t batch = config_.optim.micro_batch_size;
  const int64_t rows = held_out_.rows();
  const EvalResult held_out =
      evaluate_rows(model_, held_out_, batch, config_.eval.max_batches, &grid_);
  const EvalResult train = evaluate_rows(model_, train_, batch, (rows + batch - 1) / batch, &grid_);
  model_->train();
  if (grid_.rank() != 0) return;
  std::printf("           xi %g: %lld non-zero gate entries, train loss %.4f, held-out loss "
              "%.4f\n",
              xi, static_cast<long long>(nonzero), train.loss, held_out.loss);
  std::fflush(stdout);
  log->write({{"step", step + 1},         {"event", "xi_phase"},
              {"xi", xi},                 {"gate_nonzero", nonzero},
              {"train_loss", train.loss}, {"eval_loss", held_out.loss}});
}

}  // namespace spartan::trainer
