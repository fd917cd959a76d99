#include "launcher/runs.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "trainer/run_log.h"

extern char** environ;

namespace spartan::launcher {
namespace {

bool is_dir(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

bool is_run(const std::string& dir) {
  return file_exists(dir + "/metrics.jsonl") || file_exists(dir + "/summary.json");
}

std::string basename_of(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The last two components of a path: "pretrain/model" says more than "model".
std::string short_path(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto last = p.rfind('/');
  if (last == std::string::npos || last == 0) return p;
  const auto before = p.rfind('/', last - 1);
  return before == std::string::npos ? p : p.substr(before + 1);
}

double number(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

// A string field, or `otherwise` (a file edited by hand may hold anything).
std::string text(const nlohmann::json& j, const char* key, const std::string& otherwise) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : otherwise;
}

// The ordinary records of metrics.jsonl by step (of records with the same step the last wins)
// and the training time: the longest elapsed_s of each session, summed (a "resumed" record
// starts a session).
struct Metrics {
  std::map<int64_t, nlohmann::json> by_step;
  double seconds = 0;
};

Metrics read_metrics(const std::string& path) {
  Metrics m;
  std::ifstream in(path);
  double session = 0, last_elapsed = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer())
      continue;
    if (j.contains("event")) {
      if (j["event"] == "resumed") {
        m.seconds += session;
        session = last_elapsed = 0;
      }
      continue;
    }
    const double elapsed = number(j, "elapsed_s");
    if (std::isfinite(elapsed)) {
      if (elapsed < last_elapsed) {  // a session that began without a "resumed" record
        m.seconds += session;
        session = 0;
      }
      session = std::max(session, elapsed);
      last_elapsed = elapsed;
    }
    m.by_step[j["step"].get<int64_t>()] = j;
  }
  m.seconds += session;
  return m;
}

// ---- formatting ----

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string count(int64_t n) {
  if (n < 0) return "-";
  char buf[32];
  if (n >= 1000000000)
    std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1000000)
    std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 10000)
    std::snprintf(buf, sizeof buf, "%.1fk", n / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

std::string duration(double s) { return s > 0 ? trainer::format_duration(s, 1) : "-"; }

// ---- gnuplot ----

std::string num(double v) {  // exact enough for a position, and gnuplot reads it
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

// A gnuplot single-quoted string (inside one, only '' stands for ').
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("''") : std::string(1, ch);
  return out + "'";
}

// A scratch folder, removed with everything in it when this goes out of scope.
class Scratch {
 public:
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/spartan-plot-XXXXXX";
    if (!::mkdtemp(pattern.data()))
      throw Error("cannot make a scratch folder for the plot", pattern, "check TMPDIR");
    path = pattern;
  }
  ~Scratch() {
    std::error_code ec;  // nothing to report from a destructor
    std::filesystem::remove_all(path, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  std::string path;
};

// The common settings: a PNG terminal with a font every Debian has, plain text labels (a run
// name's "_" is not a subscript), a light grid.
const char* kPreamble =
    "set terminal pngcairo size 1000,640 noenhanced font 'DejaVu Sans,11'\n"
    "set grid lc rgb '#dddddd'\n"
    "set border lc rgb '#555555'\n"
    "set key below horizontal samplen 2 spacing 1.2 width 2\n";

// Runs `gnuplot script` in the scratch folder; an Error with gnuplot's first complaint.
void run_gnuplot(const Scratch& s, const std::string& script) {
  const std::string path = s.path + "/plot.gp", log = s.path + "/gnuplot.log";
  std::ofstream(path) << "cd " << quoted(s.path) << "\n" << kPreamble << script;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  char prog[] = "gnuplot";
  std::string script_arg = path;
  char* argv[] = {prog, script_arg.data(), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    throw Error("gnuplot is not installed", "spartan runs plot",
                "install it (apt-get install gnuplot-nox), or watch the run in TensorBoard "
                "(tensorboard --logdir <run>/tb)");
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream in(log);
    std::string first, line;
    while (std::getline(in, line))
      if (line.find_first_not_of(" \t^") != std::string::npos) first = line;
    throw Error("gnuplot failed: " + first, "spartan runs plot",
                "check that gnuplot has the pngcairo terminal (gnuplot-nox does)");
  }
}

// Moves a finished picture from the scratch folder to where it belongs.
void deliver(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    copy_file(from, to);
    std::remove(from.c_str());
  }
}

// Data files of a run's curves: "step value" lines; false when the series is empty.
bool write_series(const std::string& path, const Metrics& m, const char* key) {
  std::ofstream out(path);
  bool any = false;
  for (const auto& [step, j] : m.by_step) {
    const double v = number(j, key);
    if (!std::isfinite(v)) continue;
    out << step << " " << v << "\n";
    any = true;
  }
  return any;
}

}  // namespace

RunInfo read_run(const std::string& dir) {
  if (!is_dir(dir) || !is_run(dir))
    throw UsageError("not a run folder: " + dir, "spartan runs",
                     "name a folder that `spartan train` wrote (it holds metrics.jsonl)");
  RunInfo r;
  r.dir = dir;
  r.name = basename_of(dir);
  r.status = "-";  // unknown without summary.json (written since the runs command exists)
  if (file_exists(dir + "/config.resolved.toml")) {
    try {
      const toml::table t = toml::parse_file(dir + "/config.resolved.toml");
      r.method = t["adapter"]["method"].value_or(std::string());
      if (t["adapter"]["merge"].value_or(std::string()) == "masked" &&
          (r.method == "lora" || r.method == "sora" || r.method == "full"))
        r.method += "*";
      r.base = t["model"]["path"].value_or(std::string());
    } catch (const toml::parse_error&) {  // edited by hand: summary.json may still say
    }
  }
  std::ifstream in(dir + "/summary.json");
  const auto s = in ? nlohmann::json::parse(in, nullptr, false) : nlohmann::json();
  const bool summary = s.is_object();
  if (summary) {
    r.status = text(s, "status", "") == "done" ? "done" : "unfinished";
    r.method = text(s, "method", r.method);
    r.base = text(s, "base", r.base);
    r.base_sparsity = number(s, "base_sparsity");
    const double trainable = number(s, "trainable_parameters");
    if (std::isfinite(trainable)) r.trainable = static_cast<int64_t>(trainable);
    const double total = number(s, "total_steps");
    if (std::isfinite(total)) r.total_steps = static_cast<int64_t>(total);
  }
  const Metrics m = read_metrics(dir + "/metrics.jsonl");
  r.seconds = m.seconds;
  for (auto it = m.by_step.rbegin(); it != m.by_step.rend(); ++it) {
    if (r.steps == 0) {
      r.steps = it->first;
      r.train_loss = number(it->second, "loss");
      const double tokens = number(it->second, "tokens");
      if (std::isfinite(tokens) && r.seconds > 0) r.tokens_per_s = tokens / r.seconds;
    }
    if (!std::isfinite(r.held_out_loss) && std::isfinite(number(it->second, "eval_loss"))) {
      r.held_out_loss = number(it->second, "eval_loss");
      r.held_out_ppl = number(it->second, "eval_ppl");
    }
  }
  if (summary && s.contains("held_out") && s["held_out"].is_object()) {
    const auto& h = s["held_out"];
    if (h.contains("after") && h["after"].is_object()) {  // the whole held-out set
      r.held_out_loss = number(h["after"], "loss");
      r.held_out_ppl = number(h["after"], "perplexity");
    }
    if (h.contains("re_masked") && h["re_masked"].is_object())
      r.re_masked_ppl = number(h["re_masked"], "perplexity");
  }
  return r;
}

std::vector<std::string> find_runs(const std::vector<std::string>& args) {
  std::vector<std::string> runs;
  for (const auto& a : args) {
    if (is_run(a)) {
      runs.push_back(a);
      continue;
    }
    std::vector<std::string> inside;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(a, ec)) {
      const std::string path = a + "/" + e.path().filename().string();
      if (is_dir(path) && is_run(path)) inside.push_back(path);
    }
    if (inside.empty())
      throw UsageError("no run in " + a, "spartan runs",
                       "name run folders (holding metrics.jsonl) or a folder of them");
    std::sort(inside.begin(), inside.end());
    runs.insert(runs.end(), inside.begin(), inside.end());
  }
  return runs;
}

std::string runs_table(const std::vector<RunInfo>& runs, bool markdown) {
  bool re_masked = false;
  for (const auto& r : runs) re_masked |= std::isfinite(r.re_masked_ppl);
  std::vector<std::string> head = {"run",        "method",        "base",
                                   "sparsity",   "trainable",     "steps",
                                   "train loss", "held-out loss", "held-out ppl"};
  if (re_masked) head.push_back("re-masked ppl");
  for (const char* h : {"time", "tokens/s", "status"}) head.push_back(h);
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : runs) {
    std::string steps = std::to_string(r.steps);
    if (r.total_steps > 0 && r.total_steps != r.steps) steps += "/" + std::to_string(r.total_steps);
    std::vector<std::string> row = {
        r.name,
        r.method.empty() ? "-" : r.method,
        r.base.empty() ? "-" : short_path(r.base),
        std::isfinite(r.base_sparsity) ? fixed(100 * r.base_sparsity, 1) + "%" : "-",
        count(r.trainable),
        steps,
        fixed(r.train_loss, 4),
        fixed(r.held_out_loss, 4),
        fixed(r.held_out_ppl, 2)};
    if (re_masked) row.push_back(fixed(r.re_masked_ppl, 2));
    row.push_back(duration(r.seconds));
    row.push_back(fixed(r.tokens_per_s, 0));
    row.push_back(r.status);
    rows.push_back(std::move(row));
  }
  std::ostringstream out;
  if (markdown) {
    auto line = [&out](const std::vector<std::string>& cells) {
      out << "|";
      for (const auto& c : cells) out << " " << c << " |";
      out << "\n";
    };
    line(head);
    out << "|";
    for (size_t i = 0; i < head.size(); ++i) out << (i < 3 ? " --- |" : " ---: |");
    out << "\n";
    for (const auto& r : rows) line(r);
    return out.str();
  }
  std::vector<size_t> width(head.size());
  for (size_t i = 0; i < head.size(); ++i) {
    width[i] = head[i].size();
    for (const auto& r : rows) width[i] = std::max(width[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t i = 0; i < cells.size(); ++i) {
      const std::string pad(width[i] - cells[i].size(), ' ');
      text += i ? "  " : "";
      text += i < 3 ? cells[i] + pad : pad + cells[i];  // names left, numbers right
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out << text << "\n";
  };
  line(head);
  for (const auto& r : rows) line(r);
  return out.str();
}

std::vector<std::string> plot_run(const RunInfo& run, const std::string& out_dir) {
  const Metrics m = read_metrics(run.dir + "/metrics.jsonl");
  Scratch s;
  if (!write_series(s.path + "/loss.dat", m, "loss"))
    throw Error("nothing to plot: metrics.jsonl has no training loss", run.dir,
                "plot a run that has logged at least one step");
  const bool eval = write_series(s.path + "/eval.dat", m, "eval_loss");
  const bool lr = write_series(s.path + "/lr.dat", m, "lr");
  std::ostringstream gp;
  std::string title = run.name;
  if (!run.method.empty()) title += " (" + run.method + ")";
  gp << "set output 'loss.png'\n"
     << "set multiplot layout 2,1 title " << quoted(title) << "\n"
     << "set lmargin 12\n"
     << "set ylabel 'loss'\nset format x ''\n"
     << "plot 'loss.dat' using 1:2 with lines lw 2 lc rgb '#1f77b4' title 'training'"
     << (eval ? ", 'eval.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc rgb '#d62728' "
                "title 'held-out'"
              : "")
     << "\n"
     << "set format x '%g'\nset xlabel 'step'\nset ylabel 'learning rate'\n"
     << "set format y '%g'\n";
  if (lr)
    gp << "unset key\nplot 'lr.dat' using 1:2 with lines lw 2 lc rgb '#2ca02c'\n";
  else
    gp << "unset key\nplot 1/0 notitle\n";
  gp << "unset multiplot\n";

  const auto points = trainer::read_xi_points(run.dir + "/metrics.jsonl");
  if (!points.empty()) {
    std::ofstream dat(s.path + "/xi.dat");
    double lo = points.front().xi, hi = points.front().xi;
    std::string tics;
    for (const auto& p : points) {
      dat << p.xi << " " << p.train_loss << " " << p.held_out_loss << "\n";
      lo = std::min(lo, p.xi);
      hi = std::max(hi, p.xi);
      tics += (tics.empty() ? "" : ", ") + quoted(std::to_string(p.nonzero)) + " " + num(p.xi);
    }
    dat.close();
    const bool log_x = lo > 0 && hi / lo > 20;  // an exponential schedule
    const double pad = log_x ? 0 : (hi > lo ? 0.06 * (hi - lo) : 0.1 * std::abs(hi) + 1e-3);
    gp << "reset\n"
       << kPreamble << "set output 'sora_xi_curve.png'\n"
       << "set title " << quoted(title + ": memorisation and generalisation as gates close") << "\n"
       << "set lmargin 12\n"
       << "set xlabel 'xi (threshold of the gate step)'\nset ylabel 'loss'\n"
       << "set x2label 'non-zero gate entries after the phase'\n"
       << "set x2tics (" << tics << ")\nset xtics nomirror\n"
       << (log_x ? "set logscale x\nset logscale x2\n" : "") << "set xrange ["
       << num(log_x ? lo / 1.3 : lo - pad) << ":" << num(log_x ? hi * 1.3 : hi + pad)
       << "]\nset x2range [" << num(log_x ? lo / 1.3 : lo - pad) << ":"
       << num(log_x ? hi * 1.3 : hi + pad) << "]\n"
       << "plot 'xi.dat' using 1:2 with linespoints lw 2 pt 7 lc rgb '#1f77b4' "
          "title 'training (memorisation)', "
       << "'xi.dat' using 1:3 with linespoints lw 2 pt 5 lc rgb '#d62728' "
          "title 'held-out (generalisation)'\n";
  }
  run_gnuplot(s, gp.str());
  make_dirs(out_dir);
  std::vector<std::string> written = {out_dir + "/loss.png"};
  deliver(s.path + "/loss.png", written.back());
  if (!points.empty()) {
    written.push_back(out_dir + "/sora_xi_curve.png");
    deliver(s.path + "/sora_xi_curve.png", written.back());
  }
  return written;
}

void plot_compare(const std::vector<RunInfo>& runs, const std::string& out) {
  if (file_exists(out))
    throw UsageError(out + " exists", "--compare", "name a new file, or remove the old one");
  Scratch s;
  std::string train, eval;
  const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                           "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
  for (size_t i = 0; i < runs.size(); ++i) {
    const Metrics m = read_metrics(runs[i].dir + "/metrics.jsonl");
    const std::string n = std::to_string(i);
    const std::string style = std::string(" with lines lw 2 lc rgb '") + colours[i % 8] + "' dt " +
                              std::to_string(1 + i / 8) + " title " + quoted(runs[i].name);
    if (write_series(s.path + "/train" + n + ".dat", m, "loss"))
      train += (train.empty() ? "" : ", ") + quoted("train" + n + ".dat") + " using 1:2" + style;
    if (write_series(s.path + "/eval" + n + ".dat", m, "eval_loss"))
      eval += (eval.empty() ? "" : ", ") + quoted("eval" + n + ".dat") + " using 1:2" + style;
  }
  if (train.empty())
    throw Error("nothing to plot: no run has logged a step", runs.front().dir,
                "plot runs that have trained");
  std::ostringstream gp;
  gp << "set output 'compare.png'\nset terminal pngcairo size 1000," << (eval.empty() ? 480 : 800)
     << "\n"
     << "set multiplot layout " << (eval.empty() ? 1 : 2) << ",1\n"
     << "set lmargin 12\nset ylabel 'training loss'\n"
     << (eval.empty() ? "set xlabel 'step'\n" : "") << "plot " << train << "\n";
  if (!eval.empty()) gp << "set xlabel 'step'\nset ylabel 'held-out loss'\nplot " << eval << "\n";
  gp << "unset multiplot\n";
  run_gnuplot(s, gp.str());
  deliver(s.path + "/compare.png", out);
}

}  // namespace spartan::launcher
