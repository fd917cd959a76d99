#include "launcher/train_report.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "adapters/adapter.h"
#include "adapters/method.h"
#include "checkpoints/checkpoint.h"
#include "common/error.h"
#include "model/inspect.h"
#include "trainer/distributed.h"

namespace spartan::launcher {
namespace {

// The fraction of zeros among the base's projection weights (what pruning targets), over the
// grid: each TP rank and stage holds its own part.
double projection_sparsity(model::Llama& llama, parallel::Grid& grid) {
  const model::ZeroCount n = model::projection_zeros(
      llama, {std::begin(model::kAllProjections), std::end(model::kAllProjections)});
  auto t = torch::tensor({n.zeros, n.total}, torch::kInt64);
  grid.tp().all_reduce(t);
  grid.pp().all_reduce(t);
  return t[1].item<int64_t>() ? double(t[0].item<int64_t>()) / double(t[1].item<int64_t>()) : 0.0;
}

nlohmann::json eval_json(const trainer::EvalResult& e) {
  return {{"loss", e.loss}, {"perplexity", e.ppl}};
}

// <run>/summary.json, what `spartan runs summary` reads: written when a new run starts ("status":
// "running"; a run killed later keeps it) and again when it ends ("done").
void write_summary(const std::string& run_dir, const nlohmann::json& summary) {
  const std::string path = run_dir + "/summary.json", tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::trunc);
  out << summary.dump(2) << "\n";
  out.close();
  if (!out || std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error("cannot write the run summary", path, "check that the run folder is writable");
}

constexpr double kGiB = double(1ull << 30);

std::vector<double> in_gib(const std::vector<int64_t>& bytes) {
  std::vector<double> gib;
  for (const int64_t b : bytes) gib.push_back(b / kGiB);
  return gib;
}

// The largest and smallest peak over the ranks (what a layout needs of each node's memory), and
// what the processes held before their shards loaded (libraries, MPI).
void print_peak_memory(const trainer::TrainSummary& s, const std::vector<int64_t>& before_load) {
  const auto& peaks = s.peak_resident_bytes;
  if (peaks.empty() || before_load.empty()) return;
  const auto [low, high] = std::minmax_element(peaks.begin(), peaks.end());
  const auto before = *std::max_element(before_load.begin(), before_load.end());
  const char* since = s.peak_from_first_step ? "from the first step" : "since the start";
  if (peaks.size() == 1)
    std::printf("peak resident memory %s: %.2f GiB", since, *high / kGiB);
  else
    std::printf("peak resident memory %s: %.2f GiB on rank %lld, least %.2f GiB on rank %lld",
                since, *high / kGiB, static_cast<long long>(high - peaks.begin()), *low / kGiB,
                static_cast<long long>(low - peaks.begin()));
  std::printf(" (%.2f GiB before the model loaded)\n", before / kGiB);
}

}  // namespace

// What a checkpoint must agree on with the run that resumes from it.
nlohmann::json run_identity(const Config& c) {
  nlohmann::json id = {{"base model", checkpoints::base_model_digest(c.model.path)},
                       {"base model values", checkpoints::base_values_digest(c.model.path)},
                       {"adapter method", c.adapter.method},
                       {"adapter rank", c.adapter.r},
                       {"adapter alpha", c.adapter.alpha},
                       {"adapter targets", c.adapter.targets},
                       {"data path", c.data.path},
                       {"data seq_len", c.data.seq_len},
                       {"global batch size", c.optim.global_batch_size},
                       {"seed", c.run.seed}};
  for (const auto& [key, value] : adapters::method(c.adapter.method).identity(c.adapter))
    id[key] = value;
  return id;
}

checkpoints::Exported save_result(TrainStart& s, HeldOut& held_out) {
  const Config& c = s.config;
  const adapters::Method& method = adapters::method(c.adapter.method);
  const bool re_mask = method.masked_merge(c.adapter) && held_out.measured;
  auto evaluate = [&](model::Llama& m, parallel::Grid* grid) {
    return trainer::evaluate_rows(m, s.data.held_out, c.optim.micro_batch_size, c.eval.max_batches,
                                  grid);
  };
  checkpoints::Exported exported;
  auto tell = [&] {  // as soon as the result is saved
    if (!s.root() || exported.note.empty()) return;
    std::printf("%s\n", exported.note.c_str());
    std::fflush(stdout);
  };
  if (!s.distributed()) {
    exported = checkpoints::export_model(c, s.model, s.tokenizer->path(), s.run_dir);
    tell();
    if (re_mask) held_out.re_masked = evaluate(s.model, nullptr);  // merged and re-masked now
  } else if (checkpoints::exports_from_checkpoint(method)) {
    if (s.root()) exported = checkpoints::export_from_checkpoint(c, s.run_dir);
    tell();
    s.grid->world().barrier();
    if (re_mask) {  // the merged folder, loaded as this layout's shards
      model::Llama merged = model::load_llama(s.run_dir + "/merged", s.runtime.base(), s.shard);
      merged->set_compute_dtype(s.runtime.compute_dtype);
      held_out.re_masked = evaluate(merged, s.grid.get());
    }
  } else {
    const model::NamedTensors trained =
        trainer::gather_to_root(s.model, *s.grid, adapters::trainable_parameters(s.model));
    if (s.root()) exported = checkpoints::export_trained(c, trained, s.run_dir);
    tell();
  }
  return exported;
}

TrainReport::TrainReport(TrainStart& s, int64_t trainable, int64_t total_steps)
    : start_(s), trainable_(trainable), total_steps_(total_steps) {
  const Config& c = s.config;
  const auto& p = c.parallel;
  summary_ = {{"format", 1},
              {"status", "running"},
              {"method", adapters::method(c.adapter.method).display_name(c.adapter)},
              {"base", c.model.path},
              {"base_parameters", s.model->arch().num_parameters()},
              {"base_sparsity", projection_sparsity(s.model, *s.grid)},
              {"dtype", parallel::precision_name(s.runtime.base_dtype)},
              {"runtime", s.runtime.describe()},
              {"trainable_parameters", trainable},
              {"layout", {{"dp", p.dp}, {"pp", p.pp}, {"tp", p.tp}}},
              {"total_steps", total_steps}};
  before_load_ = trainer::gather_per_rank(*s.grid, s.resident_before_load);
  summary_["resident_before_load_gib"] = in_gib(before_load_);
}

void TrainReport::announce() const {
  const TrainStart& s = start_;
  const Config& c = s.config;
  if (!s.root()) return;
  if (s.resume.empty()) write_summary(s.run_dir, summary_);
  std::printf("run          %s\n", s.run_dir.c_str());
  if (s.distributed())
    std::printf("layout       %d ranks: dp %lld x pp %lld x tp %lld\n", s.grid->world_size(),
                static_cast<long long>(c.parallel.dp), static_cast<long long>(c.parallel.pp),
                static_cast<long long>(c.parallel.tp));
  const int64_t base = s.model->arch().num_parameters();
  std::printf("model        %s (%lld parameters, %s)\n", c.model.path.c_str(),
              static_cast<long long>(base), parallel::precision_name(s.runtime.base_dtype).c_str());
  std::printf("device       %s\n", s.runtime.describe().c_str());
  std::printf("method       %s: %lld trainable parameters (%.3f%%)\n", c.adapter.method.c_str(),
              static_cast<long long>(trainable_), 100.0 * trainable_ / base);
  const data::DataSplit& data = s.data;
  std::printf(
      "data         %s (%s): %lld train sequences of %lld tokens (%lld records, %lld "
      "truncated), %lld held-out sequences%s\n",
      c.data.path.c_str(), data::format_name(data.format),
      static_cast<long long>(data.train.rows()), static_cast<long long>(c.data.seq_len),
      static_cast<long long>(data.train.examples), static_cast<long long>(data.train.truncated),
      static_cast<long long>(data.held_out.rows()),
      c.eval.path.empty() ? "" : (" from " + c.eval.path).c_str());
  std::printf("steps        %lld (global batch %lld, micro-batch %lld)\n",
              static_cast<long long>(total_steps_),
              static_cast<long long>(c.optim.global_batch_size),
              static_cast<long long>(c.optim.micro_batch_size));
  std::fflush(stdout);
}

void TrainReport::finish(const trainer::TrainSummary& s, const HeldOut& held_out,
                         const checkpoints::Exported& exported) {
  if (!start_.root()) return;
  const bool re_masked =
      adapters::method(start_.config.adapter.method).masked_merge(start_.config.adapter);
  std::printf("\n%-28s %s\n", "", "held-out loss  perplexity");
  if (held_out.measured) {
    const auto row = [](const char* what, const trainer::EvalResult& e) {
      std::printf("%-28s %13.4f  %10.2f\n", what, e.loss, e.ppl);
    };
    row("before training", held_out.before);
    row("after training", held_out.after);
    if (re_masked) row("merged, zeros re-imposed", held_out.re_masked);
  }
  std::printf("trained to step %lld in %.1f s (%.0f tokens/s, %lld skipped",
              static_cast<long long>(s.steps), s.seconds, s.tokens_per_s,
              static_cast<long long>(s.skipped_steps));
  if (start_.distributed())
    std::printf("; %.0f%% of the time in communication, %.2f MB moved by rank 0",
                100.0 * s.comm_share, s.comm.bytes / 1e6);
  std::printf("); saved %s\n", exported.saved.c_str());
  print_peak_memory(s, before_load_);
  summary_["status"] = "done";
  summary_["steps"] = s.steps;
  summary_["skipped_steps"] = s.skipped_steps;
  summary_["train_loss"] = s.last_loss;
  summary_["seconds"] = s.seconds;  // of this process; a resumed run's earlier part is not in it
  summary_["tokens_per_s"] = s.tokens_per_s;
  summary_["saved"] = exported.saved;
  summary_["peak_resident_gib"] = in_gib(s.peak_resident_bytes);
  if (held_out.measured) {
    summary_["held_out"] = {{"before", eval_json(held_out.before)},
                            {"after", eval_json(held_out.after)}};
    if (re_masked) summary_["held_out"]["re_masked"] = eval_json(held_out.re_masked);
  }
  write_summary(start_.run_dir, summary_);
}

}  // namespace spartan::launcher
