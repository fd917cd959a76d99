// spartan train --config c.toml: fine-tune (or, with method "full", train) a model folder on
// [data], evaluate the held-out part before and after, and save the result in the run folder in
// the form the method names (adapters::Export). Under mpirun with a [parallel] layout every rank
// loads its shard. The wiring only: the start (train_start.h), the loop (trainer/), the result
// and the report (train_report.h).
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "adapters/method.h"
#include "launcher/commands.h"
#include "launcher/signals.h"
#include "launcher/train_report.h"
#include "launcher/train_start.h"
#include "trainer/distributed.h"
#include "trainer/eval.h"
#include "trainer/trainer.h"

namespace spartan::launcher {
namespace {

void train(const std::string& config_path, const std::vector<std::string>& overrides,
           const std::string& resume_option) {
  TrainStart s = start_training(config_path, overrides, resume_option);
  const Config& c = s.config;
  const adapters::Method& method = adapters::method(c.adapter.method);
  torch::manual_seed(c.run.seed);
  const adapters::Attached attached = adapters::attach(s.model, c.adapter);
  const int64_t trainable = trainer::entries_in_model(s.model, *s.grid, attached.trainable);

  trainer::Trainer t(c, s.model, *s.grid, s.data.train, s.data.held_out, s.run_dir);
  t.enable_checkpoints(run_identity(c), method.targets(c.adapter));
  install_stop_signals();
  t.stop_signal = pending_stop_signal;
  if (!s.resume.empty()) t.resume_from(s.resume);
  TrainReport report(s, trainable, t.total_steps());
  report.announce();

  HeldOut held_out;
  held_out.measured = s.data.held_out.rows() > 0;
  auto evaluate = [&] {
    return trainer::evaluate_rows(s.model, s.data.held_out, c.optim.micro_batch_size,
                                  c.eval.max_batches, s.grid.get());
  };
  if (held_out.measured) held_out.before = evaluate();
  const trainer::TrainSummary summary = t.run();
  if (held_out.measured) held_out.after = evaluate();
  const checkpoints::Exported exported = save_result(s, held_out);
  report.finish(summary, held_out, exported);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto config = std::make_shared<std::string>();
  auto resume = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "fine-tune a model folder with the configured adapter (one process, or the "
      "[parallel] layout under mpirun)");
  cmd->add_option("--config", *config, "configuration file")->required();
  cmd->add_option("--resume", *resume,
                  "checkpoint folder to continue from (default: the run's newest, if any)");
  add_set_option(cmd, *overrides);
  cmd->callback([config, overrides, resume] { train(*config, *overrides, *resume); });
}

}  // namespace spartan::launcher
