// spartan runs summary DIR... | spartan runs plot DIR...: run folders read back, as a table of
// runs (text or markdown) or as pictures drawn by gnuplot.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "launcher/commands.h"
#include "launcher/runs.h"

namespace spartan::launcher {
namespace {

std::vector<RunInfo> read_runs(const std::vector<std::string>& dirs) {
  std::vector<RunInfo> runs;
  for (const auto& d : find_runs(dirs)) runs.push_back(read_run(d));
  return runs;
}

void summary(const std::vector<std::string>& dirs, bool markdown) {
  std::fputs(runs_table(read_runs(dirs), markdown).c_str(), stdout);
}

void plot(const std::vector<std::string>& dirs, const std::string& out,
          const std::string& compare) {
  const auto runs = read_runs(dirs);
  for (const auto& r : runs) {
    const std::string folder =
        out.empty() ? r.dir + "/plots" : (runs.size() == 1 ? out : out + "/" + r.name);
    for (const auto& file : plot_run(r, folder)) std::printf("%s\n", file.c_str());
  }
  if (!compare.empty()) {
    plot_compare(runs, compare);
    std::printf("%s\n", compare.c_str());
  }
}

}  // namespace

void add_runs_command(CLI::App& app) {
  CLI::App* runs = app.add_subcommand("runs", "read run folders back: a table of runs, plots");
  runs->require_subcommand(1);

  auto dirs = std::make_shared<std::vector<std::string>>();
  auto markdown = std::make_shared<bool>(false);
  CLI::App* s = runs->add_subcommand(
      "summary",
      "a table of runs: method, base, sparsity, trainable parameters, steps, final "
      "training and held-out loss and perplexity, time, tokens/s");
  s->add_option("DIR", *dirs, "run folders, or folders of runs (such as runs/demo)")->required();
  s->add_flag("--markdown", *markdown, "print a markdown table");
  s->callback([dirs, markdown] { summary(*dirs, *markdown); });

  auto plot_dirs = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto compare = std::make_shared<std::string>();
  CLI::App* p = runs->add_subcommand(
      "plot",
      "draw each run's loss curves (loss.png) and SoRA's memorisation/generalisation "
      "curve (sora_xi_curve.png) with gnuplot");
  p->add_option("DIR", *plot_dirs, "run folders, or folders of runs")->required();
  p->add_option("--out", *out,
                "folder for the pictures (default: <run>/plots; with several runs, "
                "OUT/<run name>)");
  p->add_option("--compare", *compare,
                "also draw the runs' loss curves side by side into this new PNG file");
  p->callback([plot_dirs, out, compare] { plot(*plot_dirs, *out, *compare); });
}

}  // namespace spartan::launcher
