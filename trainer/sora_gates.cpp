#include "trainer/sora_gates.h"

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
                             double beta1, double beta2)
    : adam_(gates, std::vector<bool>(gates.size(), false), {beta1, beta2, 1e-6, 0.0}),
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
