#include <iostream>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"

namespace spartan::launcher {

void add_config_command(CLI::App& app) {
  struct Options {
    bool explain = false;
    std::string check;
    std::vector<std::string> overrides;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("config", "explain the configuration keys or check a file");
  auto* explain = cmd->add_flag("--explain", opts->explain,
                                "print every key with its type, default and meaning");
  auto* check =
      cmd->add_option("--check", opts->check, "validate FILE and print the resolved configuration")
          ->type_name("FILE");
  explain->excludes(check);
  add_set_option(cmd, opts->overrides);
  cmd->callback([opts, cmd] {
    if (opts->explain) {
      std::cout << explain_config();
      return;
    }
    if (opts->check.empty())
      throw UsageError("nothing to do", "spartan config", "pass --explain or --check FILE");
    Config config = load_config(opts->check, opts->overrides);
    ModelShape shape = model_shape(config);
    validate_against_model(config, shape);
    std::cout << "# " << opts->check << ": valid (model shape from " << shape.origin << ")\n"
              << to_toml(config);
  });
}

}  // namespace spartan::launcher
