// spartan train --config c.toml: fine-tune (or, with method "full", train) a model folder on
// [data], evaluate the held-out part before and after, save the result in the run folder:
// LoRA, SoRA (as LoRA after rank removal) and (IA)^3 as PEFT adapters, SPP merged into the base
// (zero pattern checked), full as a model folder. Under mpirun with a [parallel] layout every
// rank loads its shard; at the end the trained tensors are gathered on rank 0, which saves.
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "adapters/adapter.h"
#include "adapters/method.h"
#include "checkpoints/checkpoint.h"
#include "checkpoints/export.h"
#include "common/config.h"
#include "common/error.h"
#include "common/files.h"
#include "data/dataset.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"
#include "launcher/signals.h"
#include "model/hf_config.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "parallel/grid.h"
#include "parallel/mpi.h"
#include "trainer/distributed.h"
#include "trainer/eval.h"
#include "trainer/trainer.h"

namespace spartan::launcher {
namespace {

[[noreturn]] void missing(const Config& c, const std::string& key, const std::string& what) {
  throw UsageError(what, c.where(key) + " (key '" + key + "')",
                   "set " + key + " in the configuration");
}

std::string tokenizer_path(const Config& c) {
  if (!c.data.tokenizer.empty()) return c.data.tokenizer;
  return c.model.path + "/tokenizer.model";
}

// The fraction of zeros among the base's projection weights (what pruning targets), over the
// grid: each TP rank and stage holds its own part.
double projection_sparsity(model::Llama& llama, parallel::Grid& grid) {
  torch::NoGradGuard no_grad;
  int64_t zeros = 0, total = 0;
  for (int64_t l = llama->first_layer(); l < llama->end_layer(); ++l)
    for (model::Proj p : model::kAllProjections) {
      const auto& w = llama->projection(l, p)->weight;
      zeros += w.eq(0).sum().item<int64_t>();
      total += w.numel();
    }
  auto t = torch::tensor({zeros, total}, torch::kInt64);
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

// Every rank writes its checkpoint shards into the run folder that rank 0 made, and a resume
// reads them all from there: the folder must be one folder, not a folder of each node's own
// storage at the same path. Rank 0 leaves a random token in it that every rank reads back.
void check_shared_run_folder(const Config& c, parallel::Grid& grid, const std::string& run_dir) {
  const std::string mark = run_dir + "/.shared-folder-check";
  torch::Tensor token = torch::zeros({1}, torch::kInt64);
  if (grid.rank() == 0) {
    std::random_device entropy;
    token[0] = (static_cast<int64_t>(entropy()) << 31) ^ static_cast<int64_t>(entropy());
    std::ofstream(mark) << token.item<int64_t>() << "\n";
  }
  grid.world().broadcast(token, 0);
  const std::string where = c.where("run.output_dir") + " (key 'run.output_dir')";
  const std::string todo = "put run.output_dir on storage that every node mounts";
  parallel::check_on_every_rank([&] {
    if (::access(run_dir.c_str(), W_OK | X_OK) != 0)
      throw UsageError("cannot write to the run folder " + run_dir + " that rank 0 made", where,
                       todo);
    int64_t seen = 0;
    if (!(std::ifstream(mark) >> seen) || seen != token.item<int64_t>())
      throw UsageError("the run folder " + run_dir + " is not the one rank 0 made", where,
                       todo +
                           " (a folder at the same path on each node's own disk is not one "
                           "folder)");
  });
  grid.world().barrier();  // every rank has read the mark
  if (grid.rank() == 0) std::remove(mark.c_str());
}

void train(const std::string& config_path, const std::vector<std::string>& overrides,
           const std::string& resume_option) {
  // Under a launcher, MPI starts first (check_on_every_rank starts it): the checks of the
  // configuration and of the inputs run on every rank, on its own node, and a node that lacks a
  // file is named in the error.
  Config c;
  ModelShape shape;
  parallel::check_on_every_rank([&] {
    c = load_config(config_path, overrides);
    if (c.model.path.empty()) missing(c, "model.path", "no base model folder");
    if (c.data.path.empty()) missing(c, "data.path", "no training data");
    // Read here, so that a node without config.json fails now: model_shape would fall back on
    // [model.init] and train another shape.
    const model::LlamaArch arch = model::read_hf_config(c.model.path);
    shape = model_shape(c);
    validate_against_model(c, shape);
    check_memory_fits(arch, memory_inputs(c, c.data.seq_len), c.run.memory_limit_gb,
                      c.model.path + "/config.json with " + c.where("data.seq_len") +
                          " (keys 'data.seq_len', 'optim.micro_batch_size', 'adapter.r')");
  });
  const adapters::Method& method = adapters::method(c.adapter.method);
  if (c.parallel.backend == "nccl")
    throw UsageError("the NCCL backend needs CUDA tensors; this build of spartan trains on CPU",
                     c.where("parallel.backend") + " (key 'parallel.backend')",
                     "use backend = \"mpi\" or \"auto\"");

  const parallel::Layout layout{c.parallel.tp, c.parallel.pp, c.parallel.dp};
  std::string layout_key = "parallel.dp";  // the key to point at: one the user set, if any
  for (const char* k : {"parallel.tp", "parallel.pp", "parallel.dp"})
    if (c.where(k).find("default") == std::string::npos) layout_key = k;
  auto grid = parallel::Grid::create(
      layout, c.where(layout_key) + " (keys 'parallel.tp', 'parallel.pp', 'parallel.dp')");
  const bool root = grid->rank() == 0, distributed = grid->world_size() > 1;
  if (distributed) parallel::set_collective_timeout(c.parallel.timeout_s);
  const std::string run_dir = c.run.output_dir + "/" + c.run.name;
  // An existing run folder with a checkpoint resumes from its newest one, unless --resume names
  // another.
  const std::string resume = !resume_option.empty() ? resume_option : checkpoints::latest(run_dir);
  if (!resume_option.empty() && !file_exists(resume_option + "/manifest.json"))
    throw UsageError("no checkpoint manifest in " + resume_option, "--resume",
                     "name a checkpoint folder (runs/<name>/checkpoints/step-...)");
  if (root) {
    make_dirs(run_dir);
    std::ofstream(run_dir + "/config.resolved.toml") << to_toml(c);
  }
  if (distributed) check_shared_run_folder(c, *grid, run_dir);

  const torch::Dtype dtype = c.model.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
  const model::Shard shard = distributed
                                 ? model::make_shard(*grid, shape.num_layers, c.parallel.pp_split)
                                 : model::Shard{};
  // The inputs each rank reads on its own node; a node that cannot is named (see above).
  model::Llama llama{nullptr};
  std::unique_ptr<model::Tokenizer> tokenizer;
  data::DataSplit data;
  parallel::check_on_every_rank([&] {
    llama = model::load_llama(c.model.path, dtype, shard);
    tokenizer = std::make_unique<model::Tokenizer>(tokenizer_path(c));
    data = data::load_data(c.data.path, c.data.format, *tokenizer, c.data.seq_len, c.data.pack,
                           c.data.held_out_fraction, c.run.seed);
    if (!c.eval.path.empty())  // [eval] path: held-out data of its own, all of the file
      data.held_out = data::load_data(c.eval.path, "auto", *tokenizer, c.data.seq_len, c.data.pack,
                                      0.0, c.run.seed)
                          .train;
  });
  const model::Tokenizer& tok = *tokenizer;
  model::check_tokenizer_fits(llama->arch(), tok.vocab_size(), tok.path());
  // Sequences with no token to learn from (every response cut off at seq_len) would train on
  // nothing and report a loss of 0.
  for (const auto* part : {&data.train, &data.held_out})
    if (part->rows() > 0 && part->loss_tokens == 0)
      throw UsageError(
          std::string("no ") + (part == &data.train ? "training" : "held-out") +
              " sequence keeps a token of a response: " + std::to_string(part->truncated) + " of " +
              std::to_string(part->examples) +
              " records were cut at data.seq_len = " + std::to_string(c.data.seq_len),
          c.where("data.seq_len") + " (key 'data.seq_len')",
          "raise data.seq_len or shorten the prompts");
  torch::manual_seed(c.run.seed);
  adapters::Attached attached = adapters::attach(llama, c.adapter);
  const int64_t trainable = trainer::entries_in_model(llama, *grid, attached.trainable);

  trainer::Trainer t(c, llama, *grid, data.train, data.held_out, run_dir);
  t.enable_checkpoints(run_identity(c), method.targets(c.adapter));
  install_stop_signals();
  t.stop_signal = pending_stop_signal;
  if (!resume.empty()) t.resume_from(resume);
  // LoRA* (the SPP paper's baseline): the LoRA merged, then the base's zeros imposed again.
  const bool lora_star = method.masked_merge(c.adapter);
  nlohmann::json summary = {{"format", 1},
                            {"status", "running"},
                            {"method", method.display_name(c.adapter)},
                            {"base", c.model.path},
                            {"base_parameters", llama->arch().num_parameters()},
                            {"base_sparsity", projection_sparsity(llama, *grid)},
                            {"dtype", c.model.dtype},
                            {"trainable_parameters", trainable},
                            {"layout", {{"dp", layout.dp}, {"pp", layout.pp}, {"tp", layout.tp}}},
                            {"total_steps", t.total_steps()}};
  if (root) {
    // A resumed run leaves the summary as it is until it ends: a checkpoint refused on resume
    // must not change what the run folder says.
    if (resume.empty()) write_summary(run_dir, summary);
    std::printf("run          %s\n", run_dir.c_str());
    if (distributed)
      std::printf("layout       %d ranks: dp %lld x pp %lld x tp %lld\n", grid->world_size(),
                  static_cast<long long>(layout.dp), static_cast<long long>(layout.pp),
                  static_cast<long long>(layout.tp));
    std::printf("model        %s (%lld parameters, %s)\n", c.model.path.c_str(),
                static_cast<long long>(llama->arch().num_parameters()), c.model.dtype.c_str());
    std::printf("method       %s: %lld trainable parameters (%.3f%%)\n", c.adapter.method.c_str(),
                static_cast<long long>(trainable),
                100.0 * trainable / llama->arch().num_parameters());
    std::printf(
        "data         %s (%s): %lld train sequences of %lld tokens (%lld records, %lld "
        "truncated), %lld held-out sequences%s\n",
        c.data.path.c_str(), data::format_name(data.format),
        static_cast<long long>(data.train.rows()), static_cast<long long>(c.data.seq_len),
        static_cast<long long>(data.train.examples), static_cast<long long>(data.train.truncated),
        static_cast<long long>(data.held_out.rows()),
        c.eval.path.empty() ? "" : (" from " + c.eval.path).c_str());
    std::printf("steps        %lld (global batch %lld, micro-batch %lld)\n",
                static_cast<long long>(t.total_steps()),
                static_cast<long long>(c.optim.global_batch_size),
                static_cast<long long>(c.optim.micro_batch_size));
    std::fflush(stdout);
  }

  const bool has_held_out = data.held_out.rows() > 0;
  trainer::EvalResult before, after;
  if (has_held_out)
    before = trainer::evaluate_rows(llama, data.held_out, c.optim.micro_batch_size,
                                    c.eval.max_batches, grid.get());
  trainer::TrainSummary s = t.run();
  if (has_held_out)
    after = trainer::evaluate_rows(llama, data.held_out, c.optim.micro_batch_size,
                                   c.eval.max_batches, grid.get());

  // The result, saved as the method says. Several ranks never gather the model: rank 0 exports
  // from the final checkpoint and the base folder tensor by tensor, as `spartan merge` does, or
  // (prompt, prefix and block adapters, small) from the trained tensors alone.
  trainer::EvalResult masked;
  checkpoints::Exported exported;
  if (!distributed) {
    exported = checkpoints::export_model(c, llama, tok.path(), run_dir);
    if (lora_star && has_held_out)  // `llama` is merged and re-masked by now
      masked = trainer::evaluate_rows(llama, data.held_out, c.optim.micro_batch_size,
                                      c.eval.max_batches);
  } else if (checkpoints::exports_from_checkpoint(method)) {
    if (root) exported = checkpoints::export_from_checkpoint(c, run_dir);
    grid->world().barrier();
    if (lora_star && has_held_out) {  // the merged folder, loaded as this layout's shards
      model::Llama merged = model::load_llama(run_dir + "/merged", dtype, shard);
      masked = trainer::evaluate_rows(merged, data.held_out, c.optim.micro_batch_size,
                                      c.eval.max_batches, grid.get());
    }
  } else {
    const model::NamedTensors trained =
        trainer::gather_to_root(llama, *grid, adapters::trainable_parameters(llama));
    if (root) exported = checkpoints::export_trained(c, trained, run_dir);
  }
  if (!root) return;
  if (!exported.note.empty()) std::printf("%s\n", exported.note.c_str());
  const std::string& saved = exported.saved;
  std::printf("\n%-28s %s\n", "", "held-out loss  perplexity");
  if (has_held_out) {
    std::printf("%-28s %13.4f  %10.2f\n", "before training", before.loss, before.ppl);
    std::printf("%-28s %13.4f  %10.2f\n", "after training", after.loss, after.ppl);
    if (lora_star)
      std::printf("%-28s %13.4f  %10.2f\n", "merged, zeros re-imposed", masked.loss, masked.ppl);
  }
  std::printf("trained to step %lld in %.1f s (%.0f tokens/s, %lld skipped",
              static_cast<long long>(s.steps), s.seconds, s.tokens_per_s,
              static_cast<long long>(s.skipped_steps));
  if (distributed)
    std::printf("; %.0f%% of the time in communication, %.2f MB moved by rank 0",
                100.0 * s.comm_share, s.comm.bytes / 1e6);
  std::printf("); saved %s\n", saved.c_str());
  summary["status"] = "done";
  summary["steps"] = s.steps;
  summary["skipped_steps"] = s.skipped_steps;
  summary["train_loss"] = s.last_loss;
  summary["seconds"] = s.seconds;  // of this process; a resumed run's earlier part is not in it
  summary["tokens_per_s"] = s.tokens_per_s;
  summary["saved"] = saved;
  if (has_held_out) {
    summary["held_out"] = {{"before", eval_json(before)}, {"after", eval_json(after)}};
    if (lora_star) summary["held_out"]["re_masked"] = eval_json(masked);
  }
  write_summary(run_dir, summary);
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
