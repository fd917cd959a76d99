// spartan ckpt info DIR: what a checkpoint holds (step, topology, tensors and their slices),
// with every dataset read back so that its checksums are verified.
#include <cstdio>
#include <memory>
#include <string>

#include "checkpoints/checkpoint.h"
#include "common/files.h"
#include "launcher/commands.h"

namespace spartan::launcher {
namespace {

void info(const std::string& path) {
  // A run folder or its checkpoints/ folder means the newest checkpoint in it.
  std::string folder = path;
  if (!file_exists(folder + "/manifest.json")) {
    std::string newest = checkpoints::latest(path);
    if (newest.empty() && path.size() > 12 &&
        path.compare(path.size() - 12, 12, "/checkpoints") == 0)
      newest = checkpoints::latest(path.substr(0, path.size() - 12));
    if (!newest.empty()) folder = newest;
  }
  checkpoints::Checkpoint ck(folder);
  const auto& m = ck.manifest();
  const auto& topo = m["topology"];
  std::printf("checkpoint   %s\n", folder.c_str());
  std::printf("step         %lld (%lld tokens seen)\n", m["step"].get<long long>(),
              m["state"].value("tokens", 0LL));
  std::printf("topology     dp %lld x pp %lld x tp %lld\n", topo["dp"].get<long long>(),
              topo["pp"].get<long long>(), topo["tp"].get<long long>());
  for (const auto& [k, v] : m["identity"].items())
    std::printf("%-12s %s\n", k.c_str(), v.dump().c_str());
  int64_t params = 0, count = 0;
  std::printf("\n%-72s %-16s %s\n", "tensor", "global shape", "shards");
  for (const auto& [key, t] : m["tensors"].items()) {
    ++count;
    std::string shape;
    int64_t n = 1;
    for (const auto& d : t["global_shape"]) {
      shape += (shape.empty() ? "" : "x") + std::to_string(d.get<int64_t>());
      n *= d.get<int64_t>();
    }
    if (key.rfind("params/", 0) == 0) params += n;
    std::printf("%-72s %-16s %zu\n", key.c_str(), shape.c_str(), t["shards"].size());
  }
  const int64_t bytes = ck.verify();
  std::printf(
      "\n%lld tensors, %lld trained parameters; every dataset read back, checksums "
      "verified (%.2f MB)\n",
      static_cast<long long>(count), static_cast<long long>(params), bytes / 1e6);
}

}  // namespace

void add_ckpt_command(CLI::App& app) {
  CLI::App* ckpt = app.add_subcommand("ckpt", "inspect sharded checkpoints");
  ckpt->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = ckpt->add_subcommand(
      "info", "step, topology and tensors of a checkpoint; verifies every checksum");
  cmd->add_option("DIR", *path, "checkpoint folder, or a run folder (its newest checkpoint)")
      ->required();
  cmd->callback([path] { info(*path); });
}

}  // namespace spartan::launcher
