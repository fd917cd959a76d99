#include "trainer/sora_gates.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace spartan::trainer {

void threshold_gates(torch::Tensor& g, double xi, double lr, const std::string& kind) {
  torch::NoGradGuard no_grad;
  if (kind == "official") {  // the official code's three lines, in order
    g.copy_(torch::where(g.gt(xi), g - xi, g));
    g.copy_(torch::where(g.lt(-xi), g + xi, g));
    g.masked_fill_(g.abs().lt(xi), 0.0);
    return;
  }
  double t = xi;
  if (kind == "lr_scaled") t = xi * lr;
  else if (kind != "soft")
    throw UsageError("unknown threshold '" + kind + "'", "[adapter.sora] threshold",
                     "use official, soft or lr_scaled");
  g.copy_(g.sign() * (g.abs() - t).clamp_min(0.0));
}

GateOptimizer::GateOptimizer(model::NamedTensors gates, double xi, std::string kind,
                             double beta1, double beta2, AdamWOptions::Form form)
    : adam_(gates, std::vector<bool>(gates.size(), false), {beta1, beta2, 1e-6, 0.0, form}),
      xi_(xi), kind_(std::move(kind)) {}

void GateOptimizer::step(double lr) {
  adam_.step(lr);
  for (const auto& [name, g] : adam_.params()) {
    torch::Tensor t = g;
    threshold_gates(t, xi_, lr, kind_);
  }
}

int64_t GateOptimizer::nonzero() const {
  int64_t n = 0;
  for (const auto& [name, g] : adam_.params()) n += g.ne(0).sum().item<int64_t>();
  return n;
}

int64_t GateOptimizer::total() const {
  int64_t n = 0;
  for (const auto& [name, g] : adam_.params()) n += g.numel();
  return n;
}

torch::Tensor l1_penalty(const model::NamedTensors& gates, double lambda1) {
  std::vector<torch::Tensor> sums;
  int64_t n = 0;
  for (const auto& [name, g] : gates) {
    sums.push_back(g.abs().sum());
    n += g.numel();
  }
  if (sums.empty()) return torch::zeros({});
  return torch::stack(sums).sum() * (lambda1 / static_cast<double>(n));
}

}  // namespace spartan::trainer

namespace spartan::trainer {

namespace {
std::vector<double> linspace(double a, double b, int64_t n) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(n == 1 ? a : a + (b - a) * i / (n - 1));
  return v;
}
}  // namespace

XiSchedule::XiSchedule(const std::string& schedule, double lambda2, double max_lambda,
                       int64_t lambda_num, int64_t total_steps)
    : total_steps_(std::max<int64_t>(total_steps, 1)) {
  const int64_t n = schedule == "none" ? 1 : std::max<int64_t>(lambda_num, 1);
  if (schedule == "none" || schedule == "linear") {
    values_ = linspace(lambda2, max_lambda, n);
  } else if (schedule == "log_linear") {
    for (double x : linspace(std::exp(lambda2), std::exp(max_lambda), n)) values_.push_back(std::log(x));
  } else if (schedule == "exp_linear") {
    if (lambda2 <= 0)
      throw UsageError("the exp_linear schedule starts at log(lambda2), lambda2 is " +
                           std::to_string(lambda2), "[adapter.sora] lambda2",
                       "use lambda2 > 0 or another schedule");
    for (double x : linspace(std::log(lambda2), std::log(max_lambda), n))
      values_.push_back(std::exp(x));
  } else {
    throw UsageError("unknown xi schedule '" + schedule + "'", "[adapter.sora] schedule",
                     "use none, linear, log_linear or exp_linear");
  }
  if (n == 1) values_ = {lambda2};
  phase_steps_ = (total_steps_ + n - 1) / n;
}

double XiSchedule::xi(int64_t step) const {
  const auto phase = std::min<int64_t>(step / phase_steps_, values_.size() - 1);
  return values_[phase];
}

bool XiSchedule::phase_ends(int64_t step) const {
  return step + 1 == total_steps_ || (step + 1) % phase_steps_ == 0;
}

void write_xi_curve_svg(const std::string& path, const std::vector<XiPoint>& points,
                        int64_t total_gate_entries) {
  std::ofstream out(path);
  if (!out) throw Error("cannot write the SoRA curve", path, "check the run folder is writable");
  const double W = 640, H = 400, left = 70, right = 150, top = 40, bottom = 60;
  double lo = 1e300, hi = -1e300;
  for (const auto& p : points) {
    lo = std::min({lo, p.train_loss, p.held_out_loss});
    hi = std::max({hi, p.train_loss, p.held_out_loss});
  }
  if (points.empty()) lo = 0, hi = 1;
  if (hi - lo < 1e-9) lo -= 0.5, hi += 0.5;
  const double pad = 0.08 * (hi - lo);
  lo -= pad, hi += pad;
  const double xmax = std::max<double>(total_gate_entries, 1);
  auto X = [&](double n) { return left + (W - left - right) * n / xmax; };
  auto Y = [&](double loss) { return top + (H - top - bottom) * (hi - loss) / (hi - lo); };
  char buf[256];
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">SoRA: "
         "memorisation and generalisation against non-zero gates</text>\n";
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                left, H - bottom, W - right, H - bottom, left, top, left, H - bottom);
  out << buf;
  for (int i = 0; i <= 4; ++i) {  // ticks: gates (x) and loss (y)
    const double n = xmax * i / 4, loss = lo + (hi - lo) * i / 4;
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n",
                  X(n), H - bottom + 16, n, left - 6, Y(loss) + 4, loss);
    out << buf;
  }
  std::snprintf(buf, sizeof buf,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">non-zero gate entries (of "
                "%lld)</text>\n<text x=\"16\" y=\"%.1f\" transform=\"rotate(-90 16 %.1f)\" "
                "text-anchor=\"middle\">loss</text>\n",
                (left + W - right) / 2, H - 18, static_cast<long long>(total_gate_entries),
                (top + H - bottom) / 2, (top + H - bottom) / 2);
  out << buf;
  struct Series {
    const char* name;
    const char* color;
    double XiPoint::*loss;
  };
  const Series series[] = {{"train (memorisation)", "#1f77b4", &XiPoint::train_loss},
                           {"held-out (generalisation)", "#d62728", &XiPoint::held_out_loss}};
  int row = 0;
  for (const auto& s : series) {
    std::string line;
    for (const auto& p : points) {
      std::snprintf(buf, sizeof buf, "%s%.1f,%.1f", line.empty() ? "" : " ", X(p.nonzero),
                    Y(p.*s.loss));
      line += buf;
    }
    out << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"2\" points=\""
        << line << "\"/>\n";
    for (const auto& p : points) {
      std::snprintf(buf, sizeof buf,
                    "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>xi %g: %lld "
                    "non-zero, loss %.4f</title></circle>\n",
                    X(p.nonzero), Y(p.*s.loss), s.color, p.xi,
                    static_cast<long long>(p.nonzero), p.*s.loss);
      out << buf;
    }
    std::snprintf(buf, sizeof buf,
                  "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"%s\"/>\n"
                  "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                  W - right + 10, top + 10 + 20.0 * row, s.color, W - right + 26,
                  top + 14 + 20.0 * row, s.name);
    out << buf;
    ++row;
  }
  for (const auto& p : points) {  // ξ above each held-out point
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                  "fill=\"#555\">xi %g</text>\n",
                  X(p.nonzero), std::min(Y(p.held_out_loss), Y(p.train_loss)) - 8, p.xi);
    out << buf;
  }
  out << "</svg>\n";
  if (!out) throw Error("cannot write the SoRA curve", path, "check the disk has space");
}

std::vector<XiPoint> read_xi_points(const std::string& metrics_path) {
  std::map<int64_t, XiPoint> by_step;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("event", "") != "xi_phase") continue;
    by_step[j["step"].get<int64_t>()] = {j["xi"].get<double>(), j["gate_nonzero"].get<int64_t>(),
                                         j["train_loss"].get<double>(),
                                         j["eval_loss"].get<double>()};
  }
  std::vector<XiPoint> points;
  for (const auto& [step, p] : by_step) points.push_back(p);
  return points;
}

}  // namespace spartan::trainer
