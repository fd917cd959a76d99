// spartan: fine-tune pruned LLaMA-family models with sparsity-preserving adapters.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "common/error.h"
#include "launcher/commands.h"
#include "trainer/runtime.h"

int main(int argc, char** argv) {
  spartan::trainer::configure_runtime();
  CLI::App app{"spartan: fine-tune pruned LLaMA-family models with sparsity-preserving adapters",
               "spartan"};
  app.set_version_flag("--version", "spartan 0.1.0");
  app.require_subcommand(1);
  spartan::launcher::add_config_command(app);
  spartan::launcher::add_model_command(app);
  spartan::launcher::add_train_command(app);
  spartan::launcher::add_eval_command(app);
  spartan::launcher::add_prune_command(app);
  spartan::launcher::add_data_commands(app);
  try {
    if (argc > 1 && argv[1][0] != '-') {
      try {
        app.get_subcommand(argv[1]);
      } catch (const CLI::OptionNotFound&) {
        std::fprintf(stderr, "spartan: error: unknown command '%s', command line, see `spartan "
                     "--help` for the commands\n", argv[1]);
        return 2;
      }
    }
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "spartan: error: %s, command line, see `spartan --help`\n", e.what());
    return 2;
  } catch (const spartan::Error& e) {
    std::fprintf(stderr, "spartan: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spartan: error: %s, internal, please report this with the command\n",
                 e.what());
    return 1;
  }
  return 0;
}
