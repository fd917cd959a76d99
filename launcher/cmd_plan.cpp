// spartan plan FILE: memory per rank, FLOPs and traffic per step of the configured run, and
// whether it fits the given GPUs (model/plan.h); --suggest lists the layouts that fit.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "adapters/method.h"
#include "common/config.h"
#include "common/error.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"
#include "model/plan.h"

namespace spartan::launcher {
namespace {

struct PlanOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string gpu_memory = "80GB";
  int64_t gpus_per_node = 8, nodes = 0;
  double mfu = 0.4, gpu_tflops = 989, nvlink_gbs = 450, network_gbs = 50;
  bool sparse_base = false, recompute = false, suggest = false;
};

// "80GB", "80 GB", "141GB", "80": decimal gigabytes.
double parse_gb(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  std::string unit = end ? end : "";
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  if (!(v > 0) || !std::isfinite(v) || !(unit.empty() || unit == "GB" || unit == "G"))
    throw UsageError("--gpu-memory " + text + " is not a size in GB", "--gpu-memory",
                     "give it as 80GB");
  return v * 1e9;
}

void plan(const PlanOptions& o) {
  if (!(o.mfu > 0 && o.mfu <= 1))
    throw UsageError("--mfu " + std::to_string(o.mfu) + " is outside (0, 1]", "--mfu",
                     "give a fraction such as 0.4");
  if (!(o.gpu_tflops > 0) || !(o.nvlink_gbs > 0) || !(o.network_gbs > 0) || o.gpus_per_node < 1 ||
      o.nodes < 0)
    throw UsageError(
        "--gpu-tflops, --nvlink-gbs, --network-gbs, --gpus-per-node and --nodes "
        "must be positive",
        "command line", "give positive numbers");
  const double gpu_bytes = parse_gb(o.gpu_memory), peak = o.gpu_tflops * 1e12;
  const Config c = load_config(o.config, o.overrides);
  std::string origin;
  model::PlanInputs in;
  in.arch = model_arch(c, &origin);
  in.tp = c.parallel.tp;
  in.pp = c.parallel.pp;
  in.dp = c.parallel.dp;
  in.stage_layers = c.parallel.pp_split;
  in.method = adapters::method(c.adapter.method).costs(c.adapter);
  if (!in.method) {
    std::string modelled;
    for (const adapters::Method* m : adapters::methods())
      if (m->costs(c.adapter)) modelled += std::string(modelled.empty() ? "" : ", ") + m->name();
    throw UsageError("spartan plan models " + modelled + ", not '" + c.adapter.method + "'",
                     c.where("adapter.method") + " (key 'adapter.method')",
                     "plan one of those methods");
  }
  in.targets = c.adapter.targets;
  in.r = c.adapter.r;
  in.dropout = c.adapter.dropout;
  // A plan is for GPUs: auto resolves as it would there, unless the run is set to the CPU.
  in.base_bytes = bytes_of(resolved(c.model.dtype, c.run.device != DeviceKind::cpu));
  in.sparse_base = o.sparse_base;
  in.recompute = o.recompute || c.train.recompute == Recompute::layer;
  in.seq_len = c.data.seq_len;
  in.micro_batch = c.optim.micro_batch_size;
  in.global_batch = c.optim.global_batch_size;
  const model::Plan p = model::make_plan(in);
  std::printf("plan of %s (shape from %s)\n%s", o.config.c_str(), origin.c_str(),
              model::describe_plan(p, gpu_bytes, peak, o.mfu).c_str());
  if (!o.suggest) return;
  const int64_t gpus = o.nodes > 0 ? o.nodes * o.gpus_per_node : in.tp * in.pp * in.dp;
  const auto choices = model::suggest_layouts(in, gpus, o.gpus_per_node, gpu_bytes, peak, o.mfu,
                                              o.nvlink_gbs * 1e9, o.network_gbs * 1e9);
  std::printf(
      "\nlayouts of %lld GPUs (%lld a node) that fit %.0f GB, fastest first: compute at "
      "%.0f%% MFU with the 1F1B bubble, plus communication not hidden (TP at %.0f GB/s, "
      "PP and DP at %.0f GB/s a GPU):\n",
      static_cast<long long>(gpus), static_cast<long long>(o.gpus_per_node), gpu_bytes / 1e9,
      100 * o.mfu, o.nvlink_gbs, o.network_gbs);
  if (choices.empty()) std::printf("  none: use more GPUs, --sparse-base or --recompute\n");
  for (size_t i = 0; i < choices.size() && i < 10; ++i)
    std::printf(
        "  tp %-2lld pp %-3lld dp %-4lld peak %6.1f GB  %6.2f s a step (compute %.2f, "
        "communication %.2f)\n",
        static_cast<long long>(choices[i].tp), static_cast<long long>(choices[i].pp),
        static_cast<long long>(choices[i].dp), choices[i].peak_bytes / 1e9,
        choices[i].step_seconds(), choices[i].compute_seconds, choices[i].comm_seconds);
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto o = std::make_shared<PlanOptions>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "predict memory per rank, FLOPs and traffic per step of a configured run, and "
      "whether it fits the GPUs (nothing is loaded)");
  cmd->add_option("FILE,--config", o->config, "configuration file")->required();
  add_set_option(cmd, o->overrides);
  cmd->add_option("--gpu-memory", o->gpu_memory, "memory of one GPU (default 80GB)");
  cmd->add_option("--gpus-per-node", o->gpus_per_node, "GPUs a node (default 8)");
  cmd->add_option("--nodes", o->nodes, "nodes for --suggest (default: the configured layout's)");
  cmd->add_option("--mfu", o->mfu, "model FLOPs utilisation for the step time (default 0.4)");
  cmd->add_option("--gpu-tflops", o->gpu_tflops,
                  "peak dense bf16 TFLOP/s of one GPU (default 989, an H100/H200)");
  cmd->add_option("--nvlink-gbs", o->nvlink_gbs,
                  "GB/s a GPU inside a node, for TP in --suggest (default 450)");
  cmd->add_option("--network-gbs", o->network_gbs,
                  "GB/s a GPU between nodes, for PP and DP in --suggest (default 50)");
  cmd->add_flag("--sparse-base", o->sparse_base,
                "count the pruned projections 2:4-compressed (values and 2-bit indices)");
  cmd->add_flag("--recompute", o->recompute,
                "count activations as recomputed (each layer's input kept), as train.recompute = "
                "\"layer\" trains");
  cmd->add_flag("--suggest", o->suggest, "list the layouts that fit, fastest first");
  cmd->callback([o] { plan(*o); });
}

}  // namespace spartan::launcher
