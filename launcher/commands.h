// Sub-commands of the `spartan` executable. Each adds itself to the CLI11 app; only commands
// that work are added, so `spartan --help` never lists a stub.
#pragma once

#include <CLI/CLI.hpp>

namespace spartan::launcher {

void add_config_command(CLI::App& app);  // spartan config --explain | --check FILE
void add_model_command(CLI::App& app);   // spartan model info PATH | init --config FILE
void add_train_command(CLI::App& app);   // spartan train --config FILE
void add_eval_command(CLI::App& app);    // spartan eval --model DIR --data FILE
void add_data_commands(CLI::App& app);   // spartan tokenizer train | spartan data dictd

}  // namespace spartan::launcher
