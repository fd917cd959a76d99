// Starting a run on a cluster: the mpirun command of `spartan launch` and the sbatch script of
// `spartan slurm`, both derived from the [parallel] layout of a configuration. No torch, no MPI:
// plain text in, plain text out, so every command can be checked exactly (tests/cli/launch.sh).
//
// Rank placement follows the grid's order (rank = pp·DP·TP + dp·TP + tp, TP fastest): ranks fill
// one node before the next, so a tensor-parallel group stays inside one node whenever the ranks
// per node are a multiple of TP. Each rank gets one GPU, chosen from its local rank at start-up
// (bind_gpu_to_local_rank), and `threads_per_rank` cores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"

namespace spartan::launcher {

struct HostSlots {
  std::string host;
  int64_t slots = 0;
};

// "h1:8,h2:8" (a host without ":N" has 1 slot). `where` names the option for errors.
std::vector<HostSlots> parse_host_list(const std::string& text, const std::string& where);
// An Open MPI hostfile: one host per line, "slots=N" (default 1); '#' starts a comment.
std::vector<HostSlots> read_hostfile(const std::string& path);

// GPUs the NVIDIA driver lists on this machine (0 without one).
int64_t local_gpu_count();

// How the ranks of a layout sit on nodes; checked: the world fills whole nodes, a TP group stays
// in one node, one GPU per rank. Throws UsageError naming `where` (the option that set the
// nodes) otherwise.
struct RankPlacement {
  int64_t world = 1;
  int64_t nodes = 1;
  int64_t ranks_per_node = 1;
  int64_t gpus_per_node = 0;  // 0: CPU ranks
};
RankPlacement place_ranks(const Config& c, int64_t nodes, int64_t ranks_per_node,
                          int64_t gpus_per_node, const std::string& where);

// Inputs of the run missing on this machine: the model folder (config.json), the data, the
// tokenizer and the held-out data.
struct MissingInput {
  std::string what, where;
};
std::vector<MissingInput> missing_inputs(const Config& c);

// The `spartan train` command every rank runs: absolute executable and configuration, then the
// --set overrides.
struct TrainCommand {
  std::string spartan;  // absolute path of the executable
  std::string config;   // absolute path of the configuration
  std::vector<std::string> overrides;
  std::vector<std::string> argv() const;
};

struct LaunchRequest {
  TrainCommand train;
  std::vector<HostSlots> hosts;  // --hosts, or read from the hostfile; empty = this machine only
  std::string hostfile;          // passed on to mpirun as is
  int64_t gpus_per_node = -1;    // -1: this machine's count
  int64_t threads_per_rank = 1;
  bool oversubscribe = false;  // more ranks than cores (tests, laptops): no core binding
  std::string iface;           // network interface between nodes (MPI's TCP and NCCL); "" = any
  std::vector<std::string> environment;  // "NAME=value" of the caller; NCCL_*, OMPI_MCA_* and
                                         // UCX_* are passed on to every rank
};
// The mpirun command line, one argument per entry, and where its ranks go.
struct LaunchPlan {
  std::vector<std::string> argv;
  RankPlacement placement;
};
LaunchPlan plan_launch(const Config& c, const LaunchRequest& r);

struct SlurmRequest {
  TrainCommand train;
  int64_t nodes = 1;
  int64_t gpus_per_node = 0;
  int64_t threads_per_rank = 1;
  std::string partition, time, account;
  std::string launcher = "srun";  // srun (PMIx) | mpirun (inside the allocation)
  int64_t signal_seconds = 300;   // USR1 this long before the time limit
  std::string workdir;            // the job runs here (relative paths of the configuration)
  std::string iface;              // network interface between nodes (MPI's TCP and NCCL)
};
// The sbatch script: resources, USR1 before the time limit, requeue on exit code 75.
std::string sbatch_script(const Config& c, const SlurmRequest& r);

// Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S. Throws UsageError.
int64_t slurm_time_seconds(const std::string& text, const std::string& where);

// One shell word: as is when it is safe, else in single quotes.
std::string shell_quote(const std::string& word);
std::string shell_join(const std::vector<std::string>& words);

// At start-up of a rank started with SPARTAN_GPU_PER_RANK=1: restricts CUDA_VISIBLE_DEVICES to
// the entry of this rank's local rank (Open MPI, Slurm or MPICH's variable), so each rank sees
// one GPU as device 0. Throws Error when the node has fewer GPUs than local ranks.
void bind_gpu_to_local_rank();

}  // namespace spartan::launcher
