// spartan launch: start `spartan train` on the configured layout with mpirun (or print the
// command). spartan slurm: write the sbatch script that does the same under Slurm, with requeue.
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "launcher/cluster.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"

extern char** environ;

namespace spartan::launcher {
namespace {

namespace fs = std::filesystem;

// The configuration given as the positional argument or with --config.
std::string config_argument(const std::string& positional, const std::string& option) {
  if (!positional.empty() && !option.empty() && positional != option)
    throw UsageError("two configurations (" + positional + " and " + option + ")", "command line",
                     "give one");
  const std::string& path = positional.empty() ? option : positional;
  if (path.empty())
    throw UsageError("no configuration", "command line", "name a configuration file");
  return path;
}

TrainCommand train_command(const std::string& config, const std::vector<std::string>& overrides) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return {ec ? std::string("spartan") : self.string(), fs::absolute(config).lexically_normal(),
          overrides};
}

// Errors for inputs that are missing here; shape checks once the model is there.
void check_inputs(const Config& c) {
  const auto missing = missing_inputs(c);
  if (!missing.empty())
    throw UsageError(missing.front().what, missing.front().where,
                     "fix the path (relative paths are taken from the current folder)");
  validate_against_model(c, model_shape(c));
}

// A command that only writes a command may be run where the files are not: notes, not errors.
void note_missing_inputs(const Config& c) {
  for (const auto& m : missing_inputs(c))
    std::cerr << "spartan: note: " << m.what << ", " << m.where << "\n";
}

// mpirun, while the launcher waits for it: the signal handlers pass signals on to it.
volatile sig_atomic_t g_mpirun = 0;
volatile sig_atomic_t g_stops = 0;  // TERM and INT received so far

void pass_on(int sig, siginfo_t* info, void*) {
  // A key at the terminal (Ctrl-C) signals the whole foreground group, mpirun with it: pass on
  // only what was sent to the launcher alone (kill, a scheduler, a batch script's trap).
  if (info != nullptr && info->si_code == SI_KERNEL) return;
  const int saved = errno;
  // mpirun answers TERM and INT by killing the ranks a second later, too soon for a checkpoint;
  // it forwards USR1, on which every rank saves one and stops (exit code 75). The first TERM or
  // INT becomes USR1; another one goes on as it is.
  if ((sig == SIGTERM || sig == SIGINT) && g_stops++ == 0) sig = SIGUSR1;
  if (g_mpirun > 0) ::kill(g_mpirun, sig);
  errno = saved;
}
// Copies what arrived on `fd` to stderr; true once a line says that a rank failed. `open`
// turns false at the end of the stream.
bool relay(int fd, std::string& line, bool& open) {
  bool failed = false;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      return failed;  // nothing more for now
    }
    (void)!::write(STDERR_FILENO, buf, static_cast<size_t>(n));
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != '\n') {
        if (line.size() < 4096) line += buf[i];
        continue;
      }
      if (line.find("spartan: error:") != std::string::npos ||
          line.find("MPI_ABORT was invoked") != std::string::npos)
        failed = true;
      line.clear();
    }
  }
  open = false;
  return failed;
}

// Runs mpirun and returns its exit code. Open MPI ends the whole job when one rank fails, but it
// waits for every node's daemon to confirm, and the daemon of a node that cannot be reached (a
// lost node, a cut link) never does: mpirun would wait forever. So the launcher reads mpirun's
// stderr (and passes it through); once a rank has reported an error and mpirun has not ended
// `grace_s` seconds later, it stops mpirun and says why.
int run_mpirun(const std::vector<std::string>& args, double grace_s) {
  static const int kPassed[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0)
    throw Error(std::string("cannot make a pipe: ") + std::strerror(errno), "spartan launch",
                "check the process limits (ulimit -n)");
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string exec_failed =
      "spartan: error: cannot start mpirun, PATH, install Open MPI "
      "(openmpi-bin) or put its mpirun on PATH\n";
  // The signals wait until the handlers know mpirun: none is lost between fork and sigaction.
  sigset_t passed, before;
  sigemptyset(&passed);
  for (int sig : kPassed) sigaddset(&passed, sig);
  ::sigprocmask(SIG_BLOCK, &passed, &before);
  const pid_t launcher = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int error = errno;
    ::close(err[0]);
    ::close(err[1]);
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    throw Error(std::string("cannot start mpirun: ") + std::strerror(error), "spartan launch",
                "check the process limits (ulimit -u)");
  }
  if (pid == 0) {
    // mpirun ends the job when the launcher dies (SIGKILL, the OOM killer).
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != launcher) std::_Exit(1);
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    ::dup2(err[1], STDERR_FILENO);
    ::execvp(argv[0], argv.data());
    (void)!::write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    std::_Exit(1);
  }
  ::close(err[1]);
  ::fcntl(err[0], F_SETFL, O_NONBLOCK);
  g_mpirun = pid;
  struct sigaction action {};
  action.sa_sigaction = pass_on;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  for (int sig : kPassed) ::sigaction(sig, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a closed stderr must not end the launcher and orphan mpirun
  ::sigprocmask(SIG_SETMASK, &before, nullptr);
  // Once mpirun is reaped its pid may be reused: no signal goes to it after that.
  const auto reaped = [&](int* status, int flags) {
    ::sigprocmask(SIG_BLOCK, &passed, nullptr);
    const bool done = ::waitpid(pid, status, flags) == pid;
    if (done) g_mpirun = 0;
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    return done;
  };

  using Clock = std::chrono::steady_clock;
  std::string line;
  bool open = true, failed = false;
  Clock::time_point failed_at;
  for (;;) {
    pollfd p{err[0], POLLIN, 0};
    ::poll(&p, open ? 1 : 0, 200);
    if (open && relay(err[0], line, open) && !failed) {
      failed = true;
      failed_at = Clock::now();
    }
    int status = 0;
    if (reaped(&status, WNOHANG)) {
      if (open) relay(err[0], line, open);
      ::close(err[0]);
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (failed && std::chrono::duration<double>(Clock::now() - failed_at).count() > grace_s) {
      std::fprintf(stderr,
                   "spartan: error: mpirun did not end the job %.0f s after a rank's error (a "
                   "node that cannot be reached never confirms the end), mpirun, stopped it; "
                   "resume on the nodes that remain: spartan train continues from the newest "
                   "checkpoint\n",
                   grace_s);
      // TERM lets mpirun take down what it still reaches; KILL if it is still waiting.
      ::kill(pid, SIGTERM);
      for (int i = 0; i < 20 && !reaped(nullptr, WNOHANG); ++i) ::usleep(100 * 1000);
      if (g_mpirun > 0) {
        ::kill(pid, SIGKILL);
        reaped(nullptr, 0);
      }
      ::close(err[0]);
      return 1;
    }
  }
}

struct LaunchOptions {
  std::string config_positional, config;
  std::string hosts, hostfile, iface;
  int64_t gpus_per_node = -1, threads_per_rank = 1;
  bool oversubscribe = false, dry_run = false;
  std::vector<std::string> overrides;
};

void launch(const LaunchOptions& o) {
  const std::string path = config_argument(o.config_positional, o.config);
  const Config c = load_config(path, o.overrides);
  LaunchRequest r;
  r.train = train_command(path, o.overrides);
  if (!o.hosts.empty()) r.hosts = parse_host_list(o.hosts, "--hosts");
  if (!o.hostfile.empty()) {
    r.hosts = read_hostfile(o.hostfile);
    r.hostfile = fs::absolute(o.hostfile).lexically_normal();
  }
  r.gpus_per_node = o.gpus_per_node;
  r.threads_per_rank = o.threads_per_rank;
  r.oversubscribe = o.oversubscribe;
  r.iface = o.iface;
  for (char** e = environ; *e; ++e) r.environment.emplace_back(*e);
  const LaunchPlan plan = plan_launch(c, r);

  if (o.dry_run) {
    // The files may live on the cluster only: say what is missing here, print the command.
    note_missing_inputs(c);
    std::cout << shell_join(plan.argv) << "\n";
    return;
  }
  check_inputs(c);
  std::cout << shell_join(plan.argv) << std::endl;
  // A healthy mpirun ends the job within a second or two of a rank's error.
  const double limit = c.parallel.timeout_s > 0 ? c.parallel.timeout_s : 60;
  const int code = run_mpirun(plan.argv, std::clamp(limit, 5.0, 60.0));
  std::fflush(nullptr);
  std::exit(code);
}

struct SlurmOptions {
  std::string config_positional, config, out;
  SlurmRequest request;
  std::vector<std::string> overrides;
};

void write_slurm(SlurmOptions& o) {
  const std::string path = config_argument(o.config_positional, o.config);
  const Config c = load_config(path, o.overrides);
  SlurmRequest& r = o.request;
  r.train = train_command(path, o.overrides);
  r.workdir = fs::current_path().string();
  const std::string script = sbatch_script(c, r);
  note_missing_inputs(c);
  if (o.out.empty()) {
    std::cout << script;
    return;
  }
  std::ofstream(o.out) << script;
  if (!std::ifstream(o.out))
    throw Error("cannot write the sbatch script", o.out, "check the folder exists and is writable");
  fs::permissions(o.out, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  std::cout << "wrote " << o.out << ": submit it with `sbatch " << o.out << "`\n";
}

void add_config_options(CLI::App* cmd, std::string& positional, std::string& option) {
  cmd->add_option("config", positional, "configuration file")->type_name("FILE");
  cmd->add_option("--config", option, "configuration file (same as the positional)")
      ->type_name("FILE");
}

}  // namespace

void add_launch_command(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "run `spartan train` on the configured layout with mpirun: DP x PP x TP ranks, "
      "TP groups inside a node, one GPU per rank");
  add_config_options(cmd, o->config_positional, o->config);
  auto* hosts = cmd->add_option("--hosts", o->hosts, "nodes and ranks per node, e.g. h1:8,h2:8")
                    ->type_name("LIST");
  cmd->add_option("--hostfile", o->hostfile, "Open MPI hostfile (host slots=N per line)")
      ->type_name("FILE")
      ->excludes(hosts);
  cmd->add_option("--gpus-per-node", o->gpus_per_node,
                  "GPUs of each node (default: this machine's; 0 = CPU ranks)");
  cmd->add_option("--threads-per-rank", o->threads_per_rank, "cores (OpenMP threads) per rank")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--oversubscribe", o->oversubscribe,
                "allow more ranks than cores (no core binding; for tests and laptops)");
  cmd->add_option("--iface", o->iface,
                  "network interface between nodes, for MPI's TCP and NCCL's sockets (e.g. ib0)")
      ->type_name("NAME");
  cmd->add_flag("--dry-run", o->dry_run, "print the mpirun command instead of running it");
  add_set_option(cmd, o->overrides);
  cmd->callback([o] { launch(*o); });
}

void add_slurm_command(CLI::App& app) {
  auto o = std::make_shared<SlurmOptions>();
  CLI::App* cmd = app.add_subcommand(
      "slurm",
      "write an sbatch script for the configured layout: srun (PMIx) or mpirun, USR1 "
      "before the time limit, checkpoint and requeue");
  add_config_options(cmd, o->config_positional, o->config);
  SlurmRequest& r = o->request;
  cmd->add_option("--nodes", r.nodes, "nodes to ask for")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--gpus-per-node", r.gpus_per_node, "GPUs per node (0 = CPU ranks)")
      ->check(CLI::NonNegativeNumber)
      ->required();
  cmd->add_option("--threads-per-rank", r.threads_per_rank, "cores per rank (--cpus-per-task)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--partition", r.partition, "Slurm partition");
  cmd->add_option("--account", r.account, "Slurm account");
  cmd->add_option("--time", r.time, "time limit, e.g. 2-00:00:00");
  cmd->add_option("--launcher", r.launcher, "srun (--mpi=pmix) or mpirun inside the allocation")
      ->check(CLI::IsMember({"srun", "mpirun"}))
      ->capture_default_str();
  cmd->add_option("--signal-before", r.signal_seconds,
                  "seconds before the time limit at which the ranks get USR1")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--iface", r.iface,
                  "network interface between nodes, for MPI's TCP and NCCL's sockets (e.g. ib0)")
      ->type_name("NAME");
  cmd->add_option("--out", o->out, "write the script here (default: print it)")->type_name("FILE");
  add_set_option(cmd, o->overrides);
  cmd->callback([o] { write_slurm(*o); });
}

}  // namespace spartan::launcher
