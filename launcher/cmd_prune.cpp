// spartan prune --config c.toml [--out DIR]: the dense folder of [model] path -> a pruned folder,
// calibrated on [data] (prune.calib_samples sequences of data.seq_len tokens), with held-out
// perplexity before and after and a report (prune_report.json in the output folder).
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "adapters/adapter.h"
#include "common/config.h"
#include "common/error.h"
#include "common/memory_use.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"
#include "model/hf_config.h"
#include "model/tokenizer.h"
#include "parallel/mpi.h"
#include "prune/pruner.h"
#include "trainer/trainer.h"

namespace spartan::launcher {
namespace {

void prune(const std::string& config_path, const std::vector<std::string>& overrides,
           std::string out) {
  // One layer at a time, each with the same tensors: large blocks kept in the heap serve every
  // layer after the first instead of being faulted in again (trainer/process.h returns blocks
  // above 32 MiB to the kernel, which the trainer's varied temporaries need).
  keep_large_blocks_in_heap();
  Config c = load_config(config_path, overrides);
  auto need = [&](const std::string& key, bool ok, const std::string& what) {
    if (!ok) throw UsageError(what, c.where(key) + " (key '" + key + "')", "set " + key);
  };
  need("model.path", !c.model.path.empty(), "no model folder to prune");
  need("data.path", !c.data.path.empty(), "no calibration data");
  validate_against_model(c, model_shape(c));
  if (out.empty()) out = c.prune.out;
  need("prune.out", !out.empty(), "no output folder (or pass --out)");

  prune::PruneOptions o;
  o.method = c.prune.method;
  o.sparsity = c.prune.sparsity;
  o.pattern = prune::parse_pattern(c.prune.pattern);
  o.targets = adapters::parse_targets(c.prune.targets);
  o.blocksize = c.prune.blocksize;
  o.percdamp = c.prune.percdamp;
  o.batch = c.optim.micro_batch_size;

  const model::LlamaArch arch =
      model::read_hf_config(c.model.path);  // a missing or broken model folder is the first error
  {
    model::MemoryInputs in = memory_inputs(c, c.data.seq_len);
    in.tp = in.pp = 1;  // one process holds the whole model
    in.base_dtype_bytes = 4;
    in.adapter_r = 0;
    in.full = false;
    check_memory_fits(
        arch, in, c.run.memory_limit_gb,
        c.model.path + "/config.json with " + c.where("data.seq_len") + " (key 'data.seq_len')");
  }
  model::Tokenizer tok(c.data.tokenizer.empty() ? c.model.path + "/tokenizer.model"
                                                : c.data.tokenizer);
  model::check_tokenizer_fits(arch, tok.vocab_size(), tok.path());
  auto data = data::load_data(c.data.path, c.data.format, tok, c.data.seq_len, c.data.pack,
                              c.data.held_out_fraction, c.run.seed);
  const int64_t L = c.data.seq_len;
  if (data.train.rows() < c.prune.calib_samples)
    throw UsageError("the calibration data holds " + std::to_string(data.train.rows()) +
                         " sequences of " + std::to_string(L) + " tokens, fewer than " +
                         std::to_string(c.prune.calib_samples),
                     c.where("prune.calib_samples") + " (key 'prune.calib_samples')",
                     "lower prune.calib_samples or data.seq_len, or use more data");
  auto order = data::permutation(data.train.rows(), c.run.seed);
  order.resize(c.prune.calib_samples);
  auto calib = trainer::gather(data.train, order).first;

  std::vector<int64_t> held(data.held_out.rows());
  for (size_t i = 0; i < held.size(); ++i) held[i] = static_cast<int64_t>(i);
  if (c.eval.max_batches > 0 && static_cast<int64_t>(held.size()) > c.eval.max_batches * o.batch)
    held.resize(c.eval.max_batches * o.batch);
  auto [eval_ids, eval_labels] = trainer::gather(data.held_out, held);

  // Under mpirun the layers are split over the ranks; rank 0 writes and reports.
  std::unique_ptr<parallel::Communicator> world;
  if (parallel::launched_by_mpi() && parallel::init_mpi() > 1) world = parallel::mpi_world();
  const bool root = !world || world->rank() == 0;
  if (root) {
    std::printf("pruning %s -> %s: %s, %s, calibration %lld x %lld tokens of %s\n",
                c.model.path.c_str(), out.c_str(), name_of(o.method).c_str(),
                o.pattern.nm() ? o.pattern.str().c_str()
                               : ("unstructured " + std::to_string(o.sparsity)).c_str(),
                static_cast<long long>(calib.size(0)), static_cast<long long>(L),
                c.data.path.c_str());
  }
  std::fflush(stdout);
  prune::PruneReport report =
      prune::prune_folder(c.model.path, out, o, calib, eval_ids, eval_labels, world.get());
  if (!root) return;
  std::ofstream(out + "/prune_report.json") << report.to_json().dump(2) << "\n";
  std::printf("\n%s", report.table().c_str());
  std::printf("report: %s/prune_report.json (%.1f s)\n", out.c_str(), report.seconds);
}

}  // namespace

void add_prune_command(CLI::App& app) {
  auto config = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = app.add_subcommand(
      "prune", "prune a dense model folder (Wanda, SparseGPT, magnitude; unstructured or N:M)");
  cmd->add_option("--config", *config, "configuration file ([prune], [model], [data])")->required();
  cmd->add_option("--out", *out, "output folder (default: prune.out)");
  add_set_option(cmd, *overrides);
  cmd->callback([config, overrides, out] { prune(*config, *overrides, *out); });
}

}  // namespace spartan::launcher
