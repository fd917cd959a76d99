#include "trainer/sora_gates.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "kernels/kernels.h"

namespace spartan::trainer {

void threshold_gates(torch::Tensor& g, double xi, double lr, GateThreshold kind) {
  kernels::sora_threshold_(g, kind == GateThreshold::lr_scaled ? xi * lr : xi,
                           kind == GateThreshold::official ? kernels::GateThresholdForm::official
                                                           : kernels::GateThresholdForm::soft);
}

GateOptimizer::GateOptimizer(model::NamedTensors gates, double xi, GateThreshold kind, double beta1,
                             double beta2, AdamWOptions::Form form)
    : adam_(gates, std::vector<bool>(gates.size(), false), {beta1, beta2, 1e-6, 0.0, form}),
      xi_(xi),
      kind_(kind) {}

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

XiSchedule::XiSchedule(XiScheduleKind schedule, double lambda2, double max_lambda,
                       int64_t lambda_num, int64_t total_steps)
    : total_steps_(std::max<int64_t>(total_steps, 1)) {
  using K = XiScheduleKind;
  const int64_t n = schedule == K::none ? 1 : std::max<int64_t>(lambda_num, 1);
  switch (schedule) {
    case K::none:
    case K::linear:
      values_ = linspace(lambda2, max_lambda, n);
      break;
    case K::log_linear:
      for (double x : linspace(std::exp(lambda2), std::exp(max_lambda), n))
        values_.push_back(std::log(x));
      break;
    case K::exp_linear:
      if (lambda2 <= 0)
        throw UsageError(
            "the exp_linear schedule starts at log(lambda2), lambda2 is " + std::to_string(lambda2),
            "[adapter.sora] lambda2", "use lambda2 > 0 or another schedule");
      for (double x : linspace(std::log(lambda2), std::log(max_lambda), n))
        values_.push_back(std::exp(x));
      break;
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

}  // namespace spartan::trainer
