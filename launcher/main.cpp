// spartan: fine-tune pruned LLaMA-family models with sparsity-preserving adapters.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "common/error.h"
#include "launcher/cluster.h"
#include "launcher/commands.h"
#include "parallel/mpi.h"
#include "trainer/process.h"

namespace {

// Prints the error and ends the process. Under MPI the whole job ends (MPI_Abort), so no rank
// waits forever in a collective for one that failed. Configuration errors (exit code 2) and
// errors agreed over the job (`everywhere`) are raised alike on every rank, so only rank 0 prints
// them. Other errors: rank 0 prints and aborts at once, the others wait a moment first, so the
// usual outcome is one line, and a rank that fails alone still prints, with its rank.
int fail(const std::string& message, int code, bool everywhere = false) {
  const int size = spartan::parallel::world_size(), rank = spartan::parallel::world_rank();
  const bool alike = code == 2 || everywhere;
  if (size > 1 && rank != 0) {
    if (alike && !spartan::parallel::mpi_initialized()) return code;
    ::usleep(500 * 1000);
    if (alike) {
      spartan::parallel::abort_job(code);
      return code;
    }
  }
  if (size > 1 && !everywhere)
    std::fprintf(stderr, "spartan: error: %s (rank %d of %d)\n", message.c_str(), rank, size);
  else
    std::fprintf(stderr, "spartan: error: %s\n", message.c_str());
  std::fflush(stderr);
  if (size > 1) spartan::parallel::abort_job(code);
  // No exit handlers after an error: a library left in a failed state (HDF5 after a write that
  // hit a full disk) must not get to flush again on the way out.
  std::fflush(stdout);
  std::_Exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    spartan::launcher::bind_gpu_to_local_rank();  // before anything can initialise CUDA
  } catch (const spartan::Error& e) {
    return fail(e.what(), e.exit_code());
  }
  spartan::trainer::configure_process();
  CLI::App app{"spartan: fine-tune pruned LLaMA-family models with sparsity-preserving adapters",
               "spartan"};
  app.set_version_flag("--version",
                       [] { return "spartan 0.1.0\n" + spartan::trainer::runtime_report(); });
  app.require_subcommand(1);
  spartan::launcher::add_config_command(app);
  spartan::launcher::add_model_command(app);
  spartan::launcher::add_train_command(app);
  spartan::launcher::add_eval_command(app);
  spartan::launcher::add_generate_command(app);
  spartan::launcher::add_prune_command(app);
  spartan::launcher::add_data_commands(app);
  spartan::launcher::add_ckpt_command(app);
  spartan::launcher::add_runs_command(app);
  spartan::launcher::add_plan_command(app);
  spartan::launcher::add_merge_command(app);
  spartan::launcher::add_adapters_command(app);
  spartan::launcher::add_launch_command(app);
  spartan::launcher::add_slurm_command(app);
  try {
    if (argc > 1 && argv[1][0] != '-') {
      try {
        app.get_subcommand(argv[1]);
      } catch (const CLI::OptionNotFound&) {
        std::fprintf(stderr,
                     "spartan: error: unknown command '%s', command line, see `spartan "
                     "--help` for the commands\n",
                     argv[1]);
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
  } catch (const spartan::Stopped& e) {
    // Every rank stops together after the checkpoint: an orderly exit, no abort.
    if (spartan::parallel::world_rank() == 0) std::fprintf(stderr, "spartan: %s\n", e.what());
    return e.exit_code();
  } catch (const spartan::JobError& e) {
    return fail(e.what(), e.exit_code(), true);
  } catch (const spartan::Error& e) {
    return fail(e.what(), e.exit_code());
  } catch (const std::exception& e) {
    return fail(std::string(e.what()) + ", internal, please report this with the command", 1);
  }
  return 0;
}
