// spartan merge --run DIR [--step N] --out DIR: a run's checkpoint and its base model folder
// merged offline into a Hugging Face model folder, with a report.
#include <cstdio>
#include <memory>
#include <string>

#include "checkpoints/merge.h"
#include "launcher/commands.h"

namespace spartan::launcher {
namespace {

void merge(const std::string& run, int64_t step, const std::string& out, bool check_logits,
           bool force) {
  const auto r = checkpoints::merge_run(run, step, out, check_logits, force);
  std::printf("merged %s (%s, step %lld) into %s\n\n", r.checkpoint.c_str(), r.method.c_str(),
              static_cast<long long>(r.step), r.out.c_str());
  if (!r.merged.empty()) {
    std::printf("%-48s %14s %14s %s\n", "tensor", "zeros before", "zeros after",
                r.merged.front().ranks >= 0 ? "SoRA ranks kept" : "");
    for (const auto& m : r.merged) {
      std::printf("%-48s %14.4f %14.4f", m.name.c_str(), m.zeros_before, m.zeros_after);
      if (m.ranks >= 0)
        std::printf(" %lld/%lld", static_cast<long long>(m.ranks_kept),
                    static_cast<long long>(m.ranks));
      std::printf("\n");
    }
  }
  if (!r.adapter.empty())
    std::printf("\nthe adapter alone, in PEFT's layout: %s\n", r.adapter.c_str());
  if (r.max_logit_diff >= 0)
    std::printf("\nmax |logit| difference, adapted vs merged model on a sample: %.3g\n",
                r.max_logit_diff);
  std::printf("peak resident memory while streaming %.1f MB, %.1f MB above the start (largest "
              "tensor %.1f MB)\n",
              r.peak_resident_bytes / 1e6,
              (r.peak_resident_bytes - r.start_resident_bytes) / 1e6,
              r.largest_tensor_bytes / 1e6);
}

}  // namespace

void add_merge_command(CLI::App& app) {
  auto run = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto step = std::make_shared<int64_t>(-1);
  auto no_check = std::make_shared<bool>(false);
  auto force = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "merge", "fold a run's trained adapter into its base: a Hugging Face model folder (offline, "
               "one process)");
  cmd->add_option("--run", *run, "run folder (with config.resolved.toml and checkpoints/)")
      ->required();
  cmd->add_option("--step", *step, "checkpoint step (default: the newest)");
  cmd->add_option("--out", *out, "output model folder: new or empty (see --force)")->required();
  cmd->add_flag("--force", *force,
                "replace a non-empty --out whole (the new folder is renamed into place when "
                "complete)");
  cmd->add_flag("--no-logit-check", *no_check,
                "skip comparing adapted and merged logits (that holds both models in memory)");
  cmd->callback([=] { merge(*run, *step, *out, !*no_check, *force); });
}

}  // namespace spartan::launcher
