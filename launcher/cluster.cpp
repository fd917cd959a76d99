#include "launcher/cluster.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "common/launch_env.h"

namespace spartan::launcher {
namespace {

namespace fs = std::filesystem;

std::string str(int64_t n) { return std::to_string(n); }

// A non-negative whole number, or -1.
int64_t whole_number(const std::string& text) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), ::isdigit)) return -1;
  try {
    return std::stoll(text);
  } catch (const std::exception&) {
    return -1;
  }
}

int64_t parse_count(const std::string& text, const std::string& what, const std::string& where) {
  const int64_t n = whole_number(text);
  if (n < 1)
    throw UsageError(what + " '" + text + "' is not a positive whole number", where,
                     "write it as in h1:8,h2:8");
  return n;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, sep);) parts.push_back(part);
  return parts;
}

int64_t world_of(const Config& c) { return c.parallel.tp * c.parallel.pp * c.parallel.dp; }

std::string layout_text(const Config& c) {
  return "tp " + str(c.parallel.tp) + " x pp " + str(c.parallel.pp) + " x dp " + str(c.parallel.dp);
}

}  // namespace

std::vector<HostSlots> parse_host_list(const std::string& text, const std::string& where) {
  std::vector<HostSlots> hosts;
  for (const std::string& item : split(text, ',')) {
    const auto colon = item.rfind(':');
    HostSlots h{item.substr(0, colon), 1};
    if (colon != std::string::npos) h.slots = parse_count(item.substr(colon + 1), "slots", where);
    if (h.host.empty())
      throw UsageError("empty host name in '" + text + "'", where, "write it as in h1:8,h2:8");
    hosts.push_back(h);
  }
  if (hosts.empty()) throw UsageError("no hosts", where, "write them as in h1:8,h2:8");
  return hosts;
}

std::vector<HostSlots> read_hostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("cannot read the hostfile", path, "check the path given to --hostfile");
  std::vector<HostSlots> hosts;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    HostSlots h;
    if (!(words >> h.host)) continue;
    h.slots = 1;
    for (std::string word; words >> word;)
      if (word.rfind("slots=", 0) == 0)
        h.slots = parse_count(word.substr(6), "slots", path + ":" + str(line_no));
    hosts.push_back(h);
  }
  if (hosts.empty()) throw UsageError("the hostfile lists no host", path, "add one host per line");
  return hosts;
}

int64_t local_gpu_count() {
  std::error_code ec;
  int64_t n = 0;
  for (const auto& entry : fs::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    (void)entry;
    ++n;
  }
  return ec ? 0 : n;
}

RankPlacement place_ranks(const Config& c, int64_t nodes, int64_t ranks_per_node,
                          int64_t gpus_per_node, const std::string& where) {
  RankPlacement p;
  p.world = world_of(c);
  p.gpus_per_node = gpus_per_node;
  if (p.world <= ranks_per_node) {
    // Everything on the first node.
    p.nodes = 1;
    p.ranks_per_node = p.world;
  } else {
    p.ranks_per_node = ranks_per_node;
    if (p.world % ranks_per_node != 0)
      throw UsageError(str(p.world) + " ranks (" + layout_text(c) + ") do not fill nodes of " +
                           str(ranks_per_node) + " ranks",
                       where, "use a layout whose size is a multiple of the ranks per node");
    p.nodes = p.world / ranks_per_node;
    if (p.nodes > nodes)
      throw UsageError(str(p.world) + " ranks (" + layout_text(c) + ") need " + str(p.nodes) +
                           " nodes of " + str(ranks_per_node) + " ranks, there are " + str(nodes),
                       where, "add nodes or use a smaller layout");
    if (ranks_per_node % c.parallel.tp != 0)
      throw UsageError("a tensor-parallel group of " + str(c.parallel.tp) +
                           " ranks would span two nodes (" + str(ranks_per_node) +
                           " ranks per node)",
                       where, "use nodes with a multiple of parallel.tp ranks");
  }
  if (c.parallel.backend == Backend::nccl && gpus_per_node == 0)
    throw UsageError("parallel.backend = \"nccl\" needs GPUs, the nodes have none", where,
                     "give --gpus-per-node, or use backend = \"mpi\"");
  if (gpus_per_node > 0 && p.ranks_per_node > gpus_per_node)
    throw UsageError(str(p.ranks_per_node) + " ranks per node but " + str(gpus_per_node) +
                         " GPUs per node (one GPU per rank)",
                     where, "use more nodes or a smaller layout");
  return p;
}

std::vector<MissingInput> missing_inputs(const Config& c) {
  std::vector<MissingInput> missing;
  auto check = [&](const std::string& key, const std::string& path, const std::string& needed) {
    if (path.empty())
      missing.push_back({key + " is not set", c.file});
    else if (!file_exists(path + needed))
      missing.push_back(
          {"no " + path + needed + " on this machine", c.where(key) + " (key '" + key + "')"});
  };
  check("model.path", c.model.path, "/config.json");
  check("data.path", c.data.path, "");
  if (!c.data.tokenizer.empty())
    check("data.tokenizer", c.data.tokenizer, "");
  else if (!c.model.path.empty() && file_exists(c.model.path + "/config.json"))
    check("model.path", c.model.path, "/tokenizer.model");  // the model's own tokenizer
  if (!c.eval.path.empty()) check("eval.path", c.eval.path, "");
  return missing;
}

std::vector<std::string> TrainCommand::argv() const {
  std::vector<std::string> args{spartan, "train", "--config", config};
  for (const auto& o : overrides) {
    args.push_back("--set");
    args.push_back(o);
  }
  return args;
}

LaunchPlan plan_launch(const Config& c, const LaunchRequest& r) {
  const std::string where = !r.hostfile.empty() ? r.hostfile
                            : r.hosts.empty()   ? "this machine"
                                                : "--hosts";
  int64_t nodes = 1, slots = world_of(c);
  if (!r.hosts.empty()) {
    nodes = static_cast<int64_t>(r.hosts.size());
    slots = r.hosts.front().slots;
    for (const auto& h : r.hosts)
      if (h.slots != slots)
        throw UsageError("hosts with different slot counts (" + r.hosts.front().host + ":" +
                             str(slots) + ", " + h.host + ":" + str(h.slots) + ")",
                         where, "give every node the same number of ranks");
  }
  const int64_t gpus = r.gpus_per_node >= 0 ? r.gpus_per_node : local_gpu_count();
  LaunchPlan plan;
  plan.placement = place_ranks(c, nodes, slots, gpus, where);
  const RankPlacement& p = plan.placement;
  const std::string threads = str(r.threads_per_rank);

  auto& a = plan.argv;
  a = {"mpirun", "-np", str(p.world)};
  if (!r.hostfile.empty()) {
    a.insert(a.end(), {"--hostfile", r.hostfile});
  } else if (!r.hosts.empty()) {
    std::string list;
    for (const auto& h : r.hosts) list += (list.empty() ? "" : ",") + h.host + ":" + str(h.slots);
    a.insert(a.end(), {"--host", list});
  }
  if (r.oversubscribe)
    a.insert(a.end(), {"--oversubscribe", "--map-by", "ppr:" + str(p.ranks_per_node) + ":node",
                       "--bind-to", "none"});
  else
    a.insert(a.end(), {"--map-by", "ppr:" + str(p.ranks_per_node) + ":node:PE=" + threads,
                       "--bind-to", "core"});
  // One interface between nodes for MPI's out-of-band and TCP traffic and for NCCL's sockets.
  if (!r.iface.empty())
    a.insert(a.end(),
             {"--mca", "btl_tcp_if_include", r.iface, "--mca", "oob_tcp_if_include", r.iface});
  a.insert(a.end(), {"-x", "OMP_NUM_THREADS=" + threads});
  if (p.gpus_per_node > 0) a.insert(a.end(), {"-x", "SPARTAN_GPU_PER_RANK=1"});
  if (!r.iface.empty()) a.insert(a.end(), {"-x", "NCCL_SOCKET_IFNAME=" + r.iface});
  // The caller's NCCL, Open MPI and UCX settings reach every rank on every node.
  std::vector<std::string> passed;
  for (const auto& kv : r.environment) {
    const std::string name = kv.substr(0, kv.find('='));
    if ((name.rfind("NCCL_", 0) == 0 && !(name == "NCCL_SOCKET_IFNAME" && !r.iface.empty())) ||
        name.rfind("OMPI_MCA_", 0) == 0 || name.rfind("UCX_", 0) == 0)
      passed.push_back(name);
  }
  std::sort(passed.begin(), passed.end());
  for (const auto& name : passed) a.insert(a.end(), {"-x", name});
  const auto train = r.train.argv();
  a.insert(a.end(), train.begin(), train.end());
  return plan;
}

int64_t slurm_time_seconds(const std::string& text, const std::string& where) {
  // Fields: [days-]a[:b[:c]]; without days, a:b is M:S and a:b:c H:M:S, with days, H[:M[:S]].
  const auto dash = text.find('-');
  std::vector<std::string> parts =
      split(dash == std::string::npos ? text : text.substr(dash + 1), ':');
  std::vector<int64_t> f;
  for (const auto& part : parts) f.push_back(whole_number(part));
  const int64_t days = dash == std::string::npos ? 0 : whole_number(text.substr(0, dash));
  if (f.empty() || f.size() > 3 || days < 0 ||
      std::any_of(f.begin(), f.end(), [](int64_t n) { return n < 0; }))
    throw UsageError("time limit '" + text + "' is not in a Slurm time format", where,
                     "write it as minutes, H:M:S or D-H:M:S");
  static const int64_t hms[] = {3600, 60, 1}, ms[] = {60, 1};
  const int64_t* unit = dash != std::string::npos || f.size() == 3 ? hms : ms;
  int64_t seconds = days * 86400;
  for (size_t i = 0; i < f.size(); ++i) seconds += f[i] * unit[i];
  return seconds;
}

std::string sbatch_script(const Config& c, const SlurmRequest& r) {
  const std::string where = "--nodes " + str(r.nodes);
  const int64_t world = world_of(c);
  if (world % r.nodes != 0)
    throw UsageError(str(world) + " ranks (" + layout_text(c) + ") cannot be spread evenly over " +
                         str(r.nodes) + " nodes",
                     where, "use a number of nodes that divides the ranks");
  const RankPlacement p = place_ranks(c, r.nodes, world / r.nodes, r.gpus_per_node, where);
  if (r.launcher != "srun" && r.launcher != "mpirun")
    throw UsageError("unknown launcher '" + r.launcher + "'", "--launcher", "use srun or mpirun");
  if (!r.time.empty() && r.signal_seconds >= slurm_time_seconds(r.time, "--time"))
    throw UsageError("the stop signal " + str(r.signal_seconds) +
                         " s before the end does not "
                         "fit in the time limit (--time " +
                         r.time + ")",
                     "--signal-before", "use a shorter --signal-before or a longer --time");
  const std::string threads = str(r.threads_per_rank);
  const std::string train = shell_join(r.train.argv());

  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# Written by `spartan slurm` for " << r.train.config << ":\n"
    << "# " << layout_text(c) << " = " << p.world << " ranks, " << p.ranks_per_node
    << " per node on " << p.nodes << (p.nodes == 1 ? " node" : " nodes")
    << (p.gpus_per_node > 0 ? ", one GPU each" : ", on CPUs") << ".\n"
    << "# Submit with `sbatch <this file>`. USR1 (" << r.signal_seconds
    << " s before the time limit, or `scancel --signal=USR1 <job>`)\n"
    << "# makes every rank save a checkpoint and exit with code 75; the job then requeues itself\n"
    << "# and `spartan train` resumes from the newest checkpoint.\n"
    << "#SBATCH --job-name=" << c.run.name << "\n"
    << "#SBATCH --nodes=" << p.nodes << "\n"
    << "#SBATCH --ntasks-per-node=" << p.ranks_per_node << "\n"
    << "#SBATCH --cpus-per-task=" << threads << "\n";
  if (p.gpus_per_node > 0) s << "#SBATCH --gpus-per-node=" << p.gpus_per_node << "\n";
  if (!r.partition.empty()) s << "#SBATCH --partition=" << r.partition << "\n";
  if (!r.account.empty()) s << "#SBATCH --account=" << r.account << "\n";
  if (!r.time.empty()) s << "#SBATCH --time=" << r.time << "\n";
  // srun: Slurm signals the job steps (the ranks). mpirun: the batch shell gets the signal and
  // hands it to mpirun, which forwards USR1 to every rank.
  s << "#SBATCH --signal=" << (r.launcher == "mpirun" ? "B:" : "") << "USR1@" << r.signal_seconds
    << "\n"
    << "#SBATCH --requeue\n"
    << "#SBATCH --open-mode=append\n"
    << "#SBATCH --output=slurm-%x-%j.out\n"
    << "#SBATCH --chdir=" << shell_quote(r.workdir) << "\n\n"
    << "export OMP_NUM_THREADS=" << threads << "\n";
  if (p.gpus_per_node > 0) s << "export SPARTAN_GPU_PER_RANK=1\n";
  if (!r.iface.empty())
    s << "# The network between nodes: MPI's TCP and out-of-band traffic, NCCL's sockets.\n"
      << "export OMPI_MCA_btl_tcp_if_include=" << shell_quote(r.iface) << "\n"
      << "export OMPI_MCA_oob_tcp_if_include=" << shell_quote(r.iface) << "\n"
      << "export NCCL_SOCKET_IFNAME=" << shell_quote(r.iface) << "\n";
  s << "echo \"spartan: job $SLURM_JOB_ID, start $((${SLURM_RESTART_COUNT:-0} + 1)), on "
       "$SLURM_JOB_NODELIST\"\n";
  if (r.launcher == "srun") {
    s << "srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=" << threads << " " << train << "\n"
      << "rc=$?\n";
  } else {
    std::string env = " -x OMP_NUM_THREADS";
    if (p.gpus_per_node > 0) env += " -x SPARTAN_GPU_PER_RANK";
    if (!r.iface.empty()) env += " -x NCCL_SOCKET_IFNAME";
    s << "mpirun -np " << p.world << " --map-by ppr:" << p.ranks_per_node << ":node:PE=" << threads
      << " --bind-to core" << env << " " << train << " &\n"
      << "launcher=$!\n"
      << "trap 'kill -USR1 $launcher' USR1\n"
      << "# wait returns early when the trap runs; wait again for mpirun's own exit code.\n"
      << "while true; do wait $launcher; rc=$?; kill -0 $launcher 2>/dev/null || break; done\n";
  }
  s << "if [ $rc -eq 75 ]; then\n"
    << "  echo \"spartan: stopped after a checkpoint; requeueing job $SLURM_JOB_ID\"\n"
    << "  scontrol requeue \"$SLURM_JOB_ID\"\n"
    << "fi\n"
    << "exit $rc\n";
  return s.str();
}

std::string shell_quote(const std::string& word) {
  const bool safe = !word.empty() && std::all_of(word.begin(), word.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) ||
           std::string("_-./:=,@%+").find(ch) != std::string::npos;
  });
  if (safe) return word;
  std::string q = "'";
  for (char ch : word) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

std::string shell_join(const std::vector<std::string>& words) {
  std::string line;
  for (const auto& w : words) line += (line.empty() ? "" : " ") + shell_quote(w);
  return line;
}

void bind_gpu_to_local_rank() {
  if (!gpu_per_rank()) return;
  const std::optional<int> local = launcher_local_rank();
  if (!local) return;  // not under a launcher: keep what the user set
  const int64_t rank = *local;
  std::vector<std::string> devices;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible && *visible)
    devices = split(visible, ',');
  else
    for (int64_t i = 0, n = local_gpu_count(); i < n; ++i) devices.push_back(str(i));
  if (rank >= static_cast<int64_t>(devices.size()))
    throw Error("local rank " + str(rank) + " has no GPU of its own (" + str(devices.size()) +
                    " visible on this node)",
                "SPARTAN_GPU_PER_RANK=1", "start at most one rank per GPU on each node");
  ::setenv("CUDA_VISIBLE_DEVICES", devices[rank].c_str(), 1);
}

}  // namespace spartan::launcher
