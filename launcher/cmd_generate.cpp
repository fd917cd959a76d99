// spartan generate: continue prompts with a model folder, alone or with an adapter (a PEFT folder,
// or a run's checkpoint applied from its shards), through the training template.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "checkpoints/peft.h"
#include "common/config.h"
#include "common/error.h"
#include "common/files.h"
#include "data/dataset.h"
#include "launcher/commands.h"
#include "model/generate.h"
#include "model/hf_config.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "parallel/grid.h"
#include "parallel/mpi.h"
#include "parallel/runtime.h"

namespace spartan::launcher {
namespace {

struct GenerateCli {
  std::string model, adapter, run, tokenizer, prompt, input, templ = "alpaca", dtype = "fp32";
  int64_t step = -1;
  bool jsonl = false;
  model::GenerateOptions o;
};

// The checkpoint folder of a run: step N, or its newest.
std::string run_checkpoint(const std::string& run, int64_t step) {
  if (step < 0) {
    const std::string newest = checkpoints::latest(run);
    if (newest.empty())
      throw UsageError("the run has no checkpoint", run + "/checkpoints",
                       "name a run folder that has trained (runs/<name>)");
    return newest;
  }
  char name[48];
  std::snprintf(name, sizeof name, "/checkpoints/step-%08lld", static_cast<long long>(step));
  return run + name;
}

// The prompts as records: --prompt is an instruction; --input is Alpaca records (.json, .jsonl:
// instruction and input) or one instruction per line.
std::vector<data::Record> read_prompts(const GenerateCli& c) {
  std::vector<data::Record> prompts;
  if (!c.prompt.empty()) prompts.push_back({c.prompt, "", ""});
  if (!c.input.empty()) {
    std::error_code ec;
    if (std::filesystem::is_directory(c.input, ec))
      throw UsageError("--input is a folder", c.input, "give a file with one prompt per line");
    const auto dot = c.input.rfind('.');
    const std::string ext = dot == std::string::npos ? "" : c.input.substr(dot);
    if (ext == ".json" || ext == ".jsonl") {
      for (auto& r : data::read_alpaca(c.input)) prompts.push_back(std::move(r));
    } else {
      std::ifstream in(c.input);
      if (!in) throw Error("cannot read the prompts", c.input, "check --input");
      for (std::string line; std::getline(in, line);)
        if (line.find_first_not_of(" \t\r") != std::string::npos) prompts.push_back({line, "", ""});
    }
  }
  if (prompts.empty())
    throw UsageError("no prompt: --prompt is empty and --input holds none", "command line",
                     "give --prompt TEXT or --input FILE (one prompt per line, or Alpaca JSONL)");
  return prompts;
}

// A run's checkpoint used on another base than its own is refused, naming what differs.
void check_run_base(const checkpoints::Checkpoint& ck, const std::string& model_dir,
                    const std::string& run_base) {
  const auto& identity = ck.manifest()["identity"];
  const std::string shape = identity.value("base model", "");
  const std::string values = identity.value("base model values", "");
  if ((!shape.empty() && shape != checkpoints::base_model_digest(model_dir)) ||
      (!values.empty() && values != checkpoints::base_values_digest(model_dir)))
    throw UsageError(
        "the run trained on another base model (its config.json, tensors or "
        "sampled values differ from " +
            model_dir + ")",
        "--model", "leave out --model to use the run's base (" + run_base + ")");
}

// Under mpirun the ranks split the model by tensor parallelism and generate the same tokens: the
// grid of all ranks as TP, and this rank's shard; nullptr on one process.
std::unique_ptr<parallel::Grid> tensor_parallel_grid(const std::string& model_dir,
                                                     model::Shard* shard) {
  const int world = parallel::launched_by_mpi() ? parallel::world_size() : 1;
  if (world == 1) return nullptr;
  const model::LlamaArch arch = model::read_hf_config(model_dir);
  const std::string where = "mpirun -np " + std::to_string(world) +
                            " (generate splits the model "
                            "over the ranks by tensor parallelism)";
  if (arch.num_heads % world != 0 ||
      (arch.num_kv_heads % world != 0 && world % arch.num_kv_heads != 0) ||
      arch.vocab_size % world != 0)
    throw UsageError(std::to_string(world) + " ranks do not split the model's " +
                         std::to_string(arch.num_heads) + " heads, " +
                         std::to_string(arch.num_kv_heads) + " KV heads and vocabulary of " +
                         std::to_string(arch.vocab_size),
                     where, "use a number of ranks that divides them, as parallel.tp would");
  auto grid = parallel::Grid::create({world, 1, 1}, where);
  *shard = model::make_shard(*grid, arch.num_layers);
  return grid;
}

void generate(const GenerateCli& c) {
  if (!c.adapter.empty() && !c.run.empty())
    throw UsageError("--adapter and --run both name an adapter", "command line", "give one");
  if (c.o.max_new_tokens < 1)
    throw UsageError("--max-new-tokens must be at least 1", "command line", "");
  if (c.o.temperature < 0 || !(c.o.top_p > 0 && c.o.top_p <= 1) || c.o.top_k < 0)
    throw UsageError("--temperature must be >= 0, --top-p in (0, 1], --top-k >= 0", "command line",
                     "");
  const std::vector<data::Record> prompts = read_prompts(c);
  // A run brings its base model unless --model names one.
  Config run_config;
  std::string checkpoint;
  if (!c.run.empty()) {
    checkpoint = run_checkpoint(c.run, c.step);
    run_config = load_config(c.run + "/config.resolved.toml");
  }
  const std::string model_dir = !c.model.empty() ? c.model : run_config.model.path;
  if (model_dir.empty())
    throw UsageError("no model folder", "command line", "give --model DIR (or --run DIR)");
  // The checkpoint's manifest, read and validated once; a run's checkpoint on another base is
  // refused before anything is loaded, naming what differs.
  std::unique_ptr<checkpoints::Checkpoint> ck;
  if (!checkpoint.empty()) ck = std::make_unique<checkpoints::Checkpoint>(checkpoint);
  if (ck && !c.model.empty()) check_run_base(*ck, model_dir, run_config.model.path);
  model::Shard shard;
  const std::unique_ptr<parallel::Grid> grid = tensor_parallel_grid(model_dir, &shard);
  model::Llama llama =
      model::load_llama(model_dir, parallel::scalar_type(*option_named<Precision>(c.dtype)), shard);
  const std::string tok_path = !c.tokenizer.empty() ? c.tokenizer
                               : !run_config.data.tokenizer.empty()
                                   ? run_config.data.tokenizer
                                   : model_dir + "/tokenizer.model";
  model::Tokenizer tok(tok_path);
  model::check_tokenizer_fits(llama->arch(), tok.vocab_size(), tok.path());
  if (!c.adapter.empty()) checkpoints::load_peft_adapter(c.adapter, llama);
  if (ck) checkpoints::load_trained(*ck, run_config.adapter, llama, grid.get());
  const bool root = !grid || grid->rank() == 0;

  model::GenerateOptions o = c.o;
  o.eos_id = tok.eos_id();
  int64_t prompt_tokens = 0, new_tokens = 0;
  double prompt_seconds = 0, new_seconds = 0;
  for (const auto& record : prompts) {
    const std::string& text = record.instruction;
    const std::string prompt = c.templ == "alpaca" ? data::alpaca_prompt(record) : text;
    auto g = model::generate(llama, tok.encode(prompt, /*add_bos=*/true), o);
    std::vector<int64_t> shown = g.tokens;
    if (g.stopped_at_eos) shown.pop_back();
    const std::string completion = tok.decode(shown);
    const double rate = g.seconds > 0 ? double(g.tokens.size()) / g.seconds : 0.0;
    prompt_tokens += g.prompt_tokens;
    new_tokens += static_cast<int64_t>(g.tokens.size());
    prompt_seconds += g.prompt_seconds;
    new_seconds += g.seconds - g.prompt_seconds;
    if (!root) continue;
    if (g.cut_tokens > 0)
      std::fprintf(stderr,
                   "spartan: warning: the prompt was cut from the left by %lld tokens to %lld, so "
                   "that it and --max-new-tokens fit the model's %lld positions\n",
                   static_cast<long long>(g.cut_tokens), static_cast<long long>(g.prompt_tokens),
                   static_cast<long long>(llama->arch().max_position_embeddings));
    if (c.jsonl) {
      std::printf("%s\n", nlohmann::json{{"prompt", text},
                                         {"reference", record.output},
                                         {"completion", completion},
                                         {"tokens", g.tokens.size()},
                                         {"prompt_tokens", g.prompt_tokens},
                                         {"stopped_at_eos", g.stopped_at_eos},
                                         {"tokens_per_s", rate}}
                              .dump()
                              .c_str());
    } else {
      std::printf("> %s\n%s\n\n", text.c_str(), completion.c_str());
    }
    std::fflush(stdout);
  }
  // Throughput on stderr, so that stdout stays the completions (or JSON lines) alone.
  if (root)
    std::fprintf(stderr,
                 "%zu prompts: %lld prompt tokens at %.0f tokens/s, %lld generated at %.1f "
                 "tokens/s\n",
                 prompts.size(), static_cast<long long>(prompt_tokens),
                 prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0.0,
                 static_cast<long long>(new_tokens),
                 new_seconds > 0 ? new_tokens / new_seconds : 0.0);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto c = std::make_shared<GenerateCli>();
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "continue prompts with a model folder, a PEFT adapter or a run's checkpoint "
      "(KV-cached; greedy by default, as transformers' generate)");
  cmd->add_option("--model", c->model, "Hugging Face model folder (default: the run's base)");
  cmd->add_option("--adapter", c->adapter, "PEFT adapter folder (LoRA, (IA)^3, prompt, prefix)");
  cmd->add_option("--run", c->run, "a run folder: its adapter from a checkpoint, no merge needed");
  cmd->add_option("--step", c->step, "the run's checkpoint step (default: the newest)");
  cmd->add_option("--prompt", c->prompt, "the prompt (with --template alpaca: the instruction)");
  cmd->add_option("--input", c->input,
                  "prompts: Alpaca records (.json, .jsonl) or a text file, one per line");
  cmd->add_option("--template", c->templ, "alpaca (as training) | none")
      ->check(CLI::IsMember({"alpaca", "none"}));
  cmd->add_option("--tokenizer", c->tokenizer, "tokenizer.model (default: the run's or model's)");
  cmd->add_option("--max-new-tokens", c->o.max_new_tokens, "most tokens to add (default 64)");
  cmd->add_option("--temperature", c->o.temperature, "0 = greedy (default); > 0 samples");
  cmd->add_option("--top-p", c->o.top_p, "nucleus sampling mass (default 1)");
  cmd->add_option("--top-k", c->o.top_k, "sample from the k most likely (default 0 = all)");
  cmd->add_option("--seed", c->o.seed, "sampling seed (default 0)");
  cmd->add_option("--dtype", c->dtype, "fp32 | bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_flag("--jsonl", c->jsonl,
                "one JSON line per prompt: prompt, completion, tokens, tokens_per_s");
  cmd->callback([c] { generate(*c); });
}

}  // namespace spartan::launcher
