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
           bool force, const std::string& merge_form) {
  checkpoints::MergeOptions options;
  options.check_logits = check_logits;
  options.force = force;
  if (!merge_form.empty()) options.merge = option_named<MergeForm>(merge_form);
  const auto r = checkpoints::merge_run(run, step, out, options);
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
  if (r.max_projection_diff >= 0)
    std::printf(
        "\nmax |output| difference, each merged projection vs base + adapter on random "
        "inputs: %.3g\n",
        r.max_projection_diff);
  if (r.max_logit_diff >= 0)
    std::printf(
        "max |logit| difference, adapted vs merged model (first layer, then last layer "
        "and head) on a sample: %.3g\n",
        r.max_logit_diff);
  if (r.masked_merge && r.max_logit_diff >= 0)
    std::printf(
        "(LoRA*'s masked merge drops the adapter's update where the base is zero, so "
        "these differ from 0 by design)\n");
  std::printf(
      "peak resident memory while streaming %.1f MB, %.1f MB above the start (largest "
      "tensor %.1f MB in fp32, bound %.1f MB)\n",
      r.peak_resident_bytes / 1e6, (r.peak_resident_bytes - r.start_resident_bytes) / 1e6,
      r.largest_tensor_bytes / 1e6, r.memory_bound_bytes / 1e6);
  if (r.check_peak_resident_bytes > 0)
    std::printf("peak resident memory during the logit check %.1f MB\n",
                r.check_peak_resident_bytes / 1e6);
}

}  // namespace

void add_merge_command(CLI::App& app) {
  auto run = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto step = std::make_shared<int64_t>(-1);
  auto no_check = std::make_shared<bool>(false);
  auto force = std::make_shared<bool>(false);
  auto merge_form = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "merge",
      "fold a run's trained adapter into its base: a Hugging Face model folder (offline, "
      "one process)");
  cmd->add_option("--run", *run, "run folder (with config.resolved.toml and checkpoints/)")
      ->required();
  cmd->add_option("--step", *step, "checkpoint step (default: the newest)");
  cmd->add_option("--out", *out, "output model folder: new or empty (see --force)")->required();
  cmd->add_flag("--force", *force,
                "replace a non-empty --out whole (the new folder is renamed into place when "
                "complete)");
  cmd->add_flag("--no-logit-check", *no_check,
                "skip comparing the merged weights and logits with the adapted model (the check "
                "loads the first and last layers twice)");
  cmd->add_option("--merge", *merge_form,
                  "LoRA, SoRA: dense, or masked with the base's zeros (LoRA*), whatever the "
                  "run's adapter.merge (default: the run's)")
      ->check(CLI::IsMember(option_names<MergeForm>()));
  cmd->callback([=] { merge(*run, *step, *out, !*no_check, *force, *merge_form); });
}

}  // namespace spartan::launcher
