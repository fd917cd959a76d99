// spartan adapters --config c.toml: the PEFT-Ref tables for the configured model.
//   Table 1: each method's properties in PEFT-Ref's typology (Sabry & Belz 2023).
//   Table 2: trainable parameters per layer and in total, counted from live modules built at the
//            model's sizes, with the closed-form formula and its value beside them.
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "adapters/adapter.h"
#include "adapters/block.h"
#include "adapters/prefix.h"
#include "adapters/prompt.h"
#include "common/config.h"
#include "common/files.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"
#include "model/hf_config.h"
#include "model/llama.h"

namespace spartan::launcher {
namespace {

struct Properties {
  const char* method;
  const char* intra;        // intra-connectivity of the module
  const char* inter;        // inter-connectivity: modules that share parameters
  const char* adaptation;   // how the base's computation is changed
  const char* input;        // what the module reads
  const char* insertion;    // sequential (after) or parallel (beside) the workspace
  const char* integration;  // how its output is combined
  const char* workspace;
};

// My reading of PEFT-Ref's Table 1, extended by SoRA and SPP.
const Properties kProperties[] = {
    {"lora", "dense, low rank", "none", "reparametrisation", "hidden states", "parallel",
     "scaled addition", "linear projections"},
    {"sora", "dense, low rank, gated", "none", "reparametrisation", "hidden states", "parallel",
     "scaled addition", "linear projections"},
    {"spp", "base's zeros, row blocks", "none", "reparametrisation", "hidden states",
     "parallel", "scaled addition", "linear projections"},
    {"ia3", "none (a vector)", "none", "rescaling", "hidden states", "sequential",
     "rescaling", "k, v, FFN intermediate"},
    {"houlsby", "dense bottleneck", "none", "addition", "hidden states", "sequential",
     "direct addition", "after attention, FFN"},
    {"compacter", "Kronecker (PHM) bottleneck", "A_i shared", "addition", "hidden states",
     "sequential", "direct addition", "after attention, FFN"},
    {"tiny_attention", "dense, attention", "none", "addition", "hidden states", "parallel",
     "direct addition", "attention layer"},
    {"prompt", "none (vectors)", "none", "addition", "none", "parallel", "concatenation",
     "input embeddings"},
    {"prefix", "dense MLP (training only)", "MLP shared", "addition", "none", "parallel",
     "concatenation", "keys, values"},
};

int64_t count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

struct Row {
  explicit Row(std::string m) : method(std::move(m)) {}
  std::string method;
  int64_t per_layer = 0, shared = 0;  // counted from live modules
  int64_t formula_value = 0;          // the formula, evaluated
  std::string formula;
  int64_t insertions = 0;
};

std::vector<Row> count_methods(const Config& c, const model::LlamaArch& a) {
  const int64_t H = a.hidden_size, L = a.num_layers, r = c.adapter.r;
  const int64_t m = c.adapter.bottleneck.size, n = c.adapter.compacter.n,
                k = c.adapter.compacter.rank;
  const int64_t heads = c.adapter.tiny_attention.heads, d = c.adapter.tiny_attention.head_dim;
  const auto targets = adapters::parse_targets(c.adapter.targets);
  const auto ia3_targets = c.adapter.method == "ia3"
                               ? targets
                               : adapters::parse_targets({"k", "v", "down"});
  torch::NoGradGuard no_grad;
  std::vector<Row> rows;

  // Projection methods: one module per target, built at the projection's size.
  auto linear = [&](const std::string& method, const std::vector<model::Proj>& on,
                    const std::function<int64_t(model::Proj, int64_t, int64_t)>& formula,
                    const std::string& text) {
    AdapterConfig ac = c.adapter;
    ac.method = method;
    Row row(method);
    for (model::Proj p : on) {
      const auto [out, in] = model::projection_shape(a, p);
      row.per_layer += count(*adapters::make_linear_adapter(ac, p, out, in));
      row.formula_value += formula(p, out, in);
    }
    row.formula_value *= L;
    row.formula = text;
    row.insertions = L * static_cast<int64_t>(on.size());
    rows.push_back(row);
  };
  linear("lora", targets, [&](model::Proj, int64_t o, int64_t i) { return r * (i + o); },
         "L·Σ_targets r(d_in + d_out)");
  linear("sora", targets, [&](model::Proj, int64_t o, int64_t i) { return r * (i + o) + r; },
         "L·Σ_targets (r(d_in + d_out) + r)");
  linear("spp", targets, [&](model::Proj, int64_t o, int64_t i) { return r * i + o; },
         "L·Σ_targets (r·d_in + d_out)");
  linear("ia3", ia3_targets,
         [&](model::Proj p, int64_t o, int64_t i) { return p == model::Proj::down ? i : o; },
         "L·Σ_targets d_out (d_in for down)");

  Row houlsby("houlsby");
  houlsby.per_layer = 2 * count(adapters::HoulsbyAdapter(H, m));
  houlsby.formula_value = L * 2 * (2 * H * m + H + m);
  houlsby.formula = "L·2(2Hm + H + m)";
  houlsby.insertions = 2 * L;
  rows.push_back(houlsby);

  if (H % n == 0 && m % n == 0) {
    Row compacter("compacter");
    auto rule = std::make_shared<adapters::PhmRule>(n);
    compacter.per_layer = 2 * count(adapters::CompacterAdapter(H, m, n, k, rule, false));
    compacter.shared = count(*rule);
    compacter.formula_value = L * 2 * (2 * k * (H + m) + H + m) + n * n * n;
    compacter.formula = "L·2(2k(H + m) + H + m) + n³";
    compacter.insertions = 2 * L;
    rows.push_back(compacter);
  }

  Row tiny("tiny_attention");
  tiny.per_layer = count(adapters::TinyAttentionAdapter(H, heads, d));
  tiny.formula_value = L * 4 * H * heads * d;
  tiny.formula = "L·4H·heads·d_head";
  tiny.insertions = L;
  rows.push_back(tiny);

  Row prompt("prompt");
  prompt.shared = count(adapters::PromptEmbedding(c.adapter.prompt.num_virtual_tokens, H));
  prompt.formula_value = c.adapter.prompt.num_virtual_tokens * H;
  prompt.formula = "P·H";
  prompt.insertions = 1;
  rows.push_back(prompt);

  // Prefix tuning: one encoder for every layer; in training with its MLP (the saved form is
  // P·L·2E).
  const int64_t P = c.adapter.prefix.num_virtual_tokens, E = a.num_kv_heads * a.head_dim();
  const int64_t h = c.adapter.prefix.encoder_hidden_size > 0 ? c.adapter.prefix.encoder_hidden_size
                                                             : E;
  Row prefix("prefix");
  prefix.shared = count(adapters::PrefixEncoder(P, E, L, h, c.adapter.prefix.projection));
  prefix.formula_value = c.adapter.prefix.projection
                             ? P * E + E * h + h + h * 2 * L * E + 2 * L * E
                             : P * 2 * L * E;
  prefix.formula = c.adapter.prefix.projection ? "PE + (E + 1)h + (h + 1)·2LE, E = n_kv·d_head"
                                               : "P·2LE, E = n_kv·d_head";
  prefix.insertions = L;
  rows.push_back(prefix);
  return rows;
}

void print_tables(const std::string& config_path, const std::vector<std::string>& overrides) {
  const Config c = load_config(config_path, overrides);
  std::string origin;
  const model::LlamaArch a = model_arch(c, &origin);
  const auto mark = [&](const std::string& method) {
    return method == c.adapter.method ? "*" : " ";
  };

  std::printf("PEFT-Ref properties (Sabry & Belz 2023, Table 1; SoRA and SPP added)\n\n");
  std::printf("  %-15s %-26s %-11s %-18s %-14s %-10s %-16s %s\n", "method",
              "intra-connectivity", "sharing", "adaptation", "input", "insertion",
              "integration", "workspace");
  for (const auto& p : kProperties)
    std::printf("%s %-15s %-26s %-11s %-18s %-14s %-10s %-16s %s\n", mark(p.method), p.method,
                p.intra, p.inter, p.adaptation, p.input, p.insertion, p.integration,
                p.workspace);

  const double base = static_cast<double>(a.num_parameters());
  std::printf("\nTrainable parameters (Table 2) for %s: H %lld, FFN %lld, %lld layers, "
              "%.1fM base parameters;\nr %lld, targets", origin.c_str(),
              static_cast<long long>(a.hidden_size),
              static_cast<long long>(a.intermediate_size),
              static_cast<long long>(a.num_layers), base / 1e6,
              static_cast<long long>(c.adapter.r));
  for (const auto& t : c.adapter.targets) std::printf(" %s", t.c_str());
  std::printf(", bottleneck m %lld, Compacter n %lld k %lld, tiny-attention %lld x %lld, "
              "P %lld\n\n",
              static_cast<long long>(c.adapter.bottleneck.size),
              static_cast<long long>(c.adapter.compacter.n),
              static_cast<long long>(c.adapter.compacter.rank),
              static_cast<long long>(c.adapter.tiny_attention.heads),
              static_cast<long long>(c.adapter.tiny_attention.head_dim),
              static_cast<long long>(c.adapter.prompt.num_virtual_tokens));
  std::printf("  %-15s %12s %12s %10s %6s %12s  %s\n", "method", "per layer", "total",
              "% of base", "#ins.", "formula", "");
  for (const Row& row : count_methods(c, a)) {
    const int64_t total = row.per_layer * a.num_layers + row.shared;
    std::printf("%s %-15s %12lld %12lld %9.4f%% %6lld %12lld  %s%s\n", mark(row.method),
                row.method.c_str(), static_cast<long long>(row.per_layer),
                static_cast<long long>(total), 100.0 * total / base,
                static_cast<long long>(row.insertions),
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
      "adapters", "the PEFT-Ref tables for the configured model: each method's properties and "
                  "trainable parameters, counted from live modules, with their formulas");
  cmd->add_option("--config", *config, "configuration file")->required();
  add_set_option(cmd, *overrides);
  cmd->callback([config, overrides] { print_tables(*config, *overrides); });
}

}  // namespace spartan::launcher
