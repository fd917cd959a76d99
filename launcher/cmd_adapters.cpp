// spartan adapters --config c.toml: the PEFT-Ref tables for the configured model.
//   Table 1: each method's properties in PEFT-Ref's typology (Sabry & Belz 2023).
//   Table 2: trainable parameters per layer and in total, counted from live modules built at the
//            model's sizes, with the closed-form formula and its value beside them.
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "adapters/method.h"
#include "common/config.h"
#include "common/files.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"
#include "model/hf_config.h"
#include "model/llama.h"

namespace spartan::launcher {
namespace {

void print_tables(const std::string& config_path, const std::vector<std::string>& overrides) {
  const Config c = load_config(config_path, overrides);
  std::string origin;
  const model::LlamaArch a = model_arch(c, &origin);
  const auto mark = [&](const std::string& name) { return name == c.adapter.method ? "*" : " "; };

  std::printf("PEFT-Ref properties (Sabry & Belz 2023, Table 1; SoRA and SPP added)\n\n");
  std::printf("  %-15s %-26s %-11s %-18s %-14s %-10s %-16s %s\n", "method", "intra-connectivity",
              "sharing", "adaptation", "input", "insertion", "integration", "workspace");
  for (const adapters::Method* m : adapters::methods())
    if (const adapters::PeftRef* p = m->peft_ref())
      std::printf("%s %-15s %-26s %-11s %-18s %-14s %-10s %-16s %s\n", mark(m->name()), m->name(),
                  p->intra, p->inter, p->adaptation, p->input, p->insertion, p->integration,
                  p->workspace);

  const double base = static_cast<double>(a.num_parameters());
  std::printf(
      "\nTrainable parameters (Table 2) for %s: H %lld, FFN %lld, %lld layers, "
      "%.1fM base parameters;\nr %lld, targets",
      origin.c_str(), static_cast<long long>(a.hidden_size),
      static_cast<long long>(a.intermediate_size), static_cast<long long>(a.num_layers), base / 1e6,
      static_cast<long long>(c.adapter.r));
  for (const auto& t : c.adapter.targets) std::printf(" %s", t.c_str());
  std::printf(
      ", bottleneck m %lld, Compacter n %lld k %lld, tiny-attention %lld x %lld, "
      "P %lld\n\n",
      static_cast<long long>(c.adapter.bottleneck.size),
      static_cast<long long>(c.adapter.compacter.n),
      static_cast<long long>(c.adapter.compacter.rank),
      static_cast<long long>(c.adapter.tiny_attention.heads),
      static_cast<long long>(c.adapter.tiny_attention.head_dim),
      static_cast<long long>(c.adapter.prompt.num_virtual_tokens));
  std::printf("  %-15s %12s %12s %10s %6s %12s  %s\n", "method", "per layer", "total", "% of base",
              "#ins.", "formula", "");
  for (const adapters::Method* m : adapters::methods()) {
    if (!m->peft_ref()) continue;
    const adapters::ParameterCount row = m->count(a, c.adapter);
    if (row.insertions == 0) continue;  // not at these sizes (Compacter's n must divide them)
    const int64_t total = row.per_layer * a.num_layers + row.shared;
    std::printf("%s %-15s %12lld %12lld %9.4f%% %6lld %12lld  %s%s\n", mark(m->name()), m->name(),
                static_cast<long long>(row.per_layer), static_cast<long long>(total),
                100.0 * total / base, static_cast<long long>(row.insertions),
                static_cast<long long>(row.formula_value), row.formula.c_str(),
                total == row.formula_value ? "" : "  (differs from the count!)");
  }
  std::printf("\n* the configured method (adapter.method = \"%s\")\n", c.adapter.method.c_str());
}

}  // namespace

void add_adapters_command(CLI::App& app) {
  auto config = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = app.add_subcommand(
      "adapters",
      "the PEFT-Ref tables for the configured model: each method's properties and "
      "trainable parameters, counted from live modules, with their formulas");
  cmd->add_option("--config", *config, "configuration file")->required();
  add_set_option(cmd, *overrides);
  cmd->callback([config, overrides] { print_tables(*config, *overrides); });
}

}  // namespace spartan::launcher
