#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "common/files.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"
#include "model/inspect.h"
#include "model/llama.h"
#include "parallel/runtime.h"

namespace spartan::launcher {
namespace {

// A new model from [model.init], saved as a HF folder, then one forward pass on random tokens:
// a freshly initialised model must score about ln(vocab) per token.
void init_model(const std::string& config_path, const std::vector<std::string>& overrides,
                std::string out) {
  Config config = load_config(config_path, overrides);
  validate_against_model(config, init_shape(config));
  if (out.empty()) out = config.run.output_dir + "/" + config.run.name + "/base";
  torch::manual_seed(config.run.seed);
  const Precision precision = resolved(config.model.dtype, /*cuda=*/false);  // made on the CPU
  const torch::Dtype dtype = parallel::scalar_type(precision);
  const model::LlamaArch arch = model::arch_from_init(config.model.init);
  model::MemoryInputs need;
  need.base_dtype_bytes = bytes_of(precision);
  check_memory_fits(arch, need, config.run.memory_limit_gb, "[model.init] of " + config.file);
  model::Llama llama(arch, dtype);
  llama->init_weights();
  make_dirs(out);
  llama->save(out);

  torch::NoGradGuard no_grad;
  const int64_t T = std::min<int64_t>(128, config.model.init.max_position_embeddings);
  auto ids = torch::randint(config.model.init.vocab_size, {2, T}, torch::kInt64);
  double loss = model::causal_lm_loss(llama->forward(ids), ids).item<double>();
  std::printf("saved %s (%lld parameters, %s)\n", out.c_str(),
              static_cast<long long>(llama->arch().num_parameters()), name_of(precision).c_str());
  std::printf("smoke forward: loss %.4f on random tokens (ln vocab = %.4f)\n", loss,
              std::log(static_cast<double>(config.model.init.vocab_size)));
}

}  // namespace

void add_model_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("model", "inspect or create Hugging Face LLaMA model folders");
  cmd->require_subcommand(1);

  auto folder = std::make_shared<std::string>();
  CLI::App* info = cmd->add_subcommand(
      "info", "architecture, parameter count, dtype and measured sparsity (zeros, N:M) per tensor");
  info->add_option("path", *folder, "Hugging Face model folder")->required();
  info->callback(
      [folder] { std::cout << model::format_model_stats(model::inspect_model(*folder)); });

  struct InitOptions {
    std::string config, out;
    std::vector<std::string> overrides;
  };
  auto init_opts = std::make_shared<InitOptions>();
  CLI::App* init = cmd->add_subcommand(
      "init", "create a randomly initialised model from [model.init] and save it as a HF folder");
  init->add_option("--config", init_opts->config, "configuration file")->required();
  init->add_option("--out", init_opts->out, "output folder (default <output_dir>/<name>/base)");
  add_set_option(init, init_opts->overrides);
  init->callback(
      [init_opts] { init_model(init_opts->config, init_opts->overrides, init_opts->out); });
}

}  // namespace spartan::launcher
