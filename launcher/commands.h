// Sub-commands of the `spartan` executable. Each adds itself to the CLI11 app; only commands
// that work are added, so `spartan --help` never lists a stub.
#pragma once

#include <CLI/CLI.hpp>

namespace spartan::launcher {

// --set section.key=value (repeatable): overrides applied on top of the configuration file.
inline void add_set_option(CLI::App* cmd, std::vector<std::string>& overrides) {
  cmd->add_option("--set", overrides, "override a configuration key, e.g. --set optim.lr=1e-4")
      ->type_name("KEY=VALUE");
}

void add_config_command(CLI::App& app);    // spartan config --explain | --check FILE
void add_model_command(CLI::App& app);     // spartan model info PATH | init --config FILE
void add_train_command(CLI::App& app);     // spartan train --config FILE
void add_eval_command(CLI::App& app);      // spartan eval --model DIR --data FILE
void add_generate_command(CLI::App& app);  // spartan generate --model DIR --prompt TEXT
void add_data_commands(CLI::App& app);     // spartan tokenizer train | spartan data dictd
void add_prune_command(CLI::App& app);     // spartan prune --config FILE
void add_ckpt_command(CLI::App& app);      // spartan ckpt info DIR
void add_merge_command(CLI::App& app);     // spartan merge --run DIR --out DIR
void add_adapters_command(CLI::App& app);  // spartan adapters --config FILE
void add_plan_command(CLI::App& app);      // spartan plan FILE [--gpu-memory 80GB --suggest]
void add_runs_command(CLI::App& app);      // spartan runs summary DIR... | plot DIR...
void add_launch_command(CLI::App& app);    // spartan launch FILE [--hosts ...] [--dry-run]
void add_slurm_command(CLI::App& app);     // spartan slurm FILE --nodes N --gpus-per-node G

}  // namespace spartan::launcher
