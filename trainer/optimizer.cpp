#include "trainer/optimizer.h"

#include <cmath>

namespace spartan::trainer {

AdamW::AdamW(model::NamedTensors params, std::vector<bool> decay, AdamWOptions options)
    : params_(std::move(params)), decay_(std::move(decay)), opt_(options) {
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bias1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(step_));
  const double step_size = lr / bias1;
  const double bias2_sqrt = std::sqrt(bias2);
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i].second;
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    const bool decays = decay_[i] && opt_.weight_decay != 0;
    if (opt_.form == AdamWOptions::Form::hf) {  // the old transformers.AdamW, line for line
      exp_avg_[i].mul_(opt_.beta1).add_(g, 1.0 - opt_.beta1);
      exp_avg_sq_[i].mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
      auto denom = exp_avg_sq_[i].sqrt().add_(opt_.eps);
      p.addcdiv_(exp_avg_[i], denom, -step_size * bias2_sqrt);
      if (decays) p.add_(p, -lr * opt_.weight_decay);
      continue;
    }
    if (decays) p.mul_(1.0 - lr * opt_.weight_decay);
    exp_avg_[i].lerp_(g, 1.0 - opt_.beta1);  // as torch.optim.AdamW 2.x rounds it
    exp_avg_sq_[i].mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
    auto denom = (exp_avg_sq_[i].sqrt() / bias2_sqrt).add_(opt_.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::load_state(const std::vector<torch::Tensor>& exp_avg,
                       const std::vector<torch::Tensor>& exp_avg_sq, int64_t steps) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i].copy_(exp_avg.at(i));
    exp_avg_sq_[i].copy_(exp_avg_sq.at(i));
  }
  step_ = steps;
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

std::vector<bool> decay_matrices(const model::NamedTensors& params) {
  std::vector<bool> out;
  for (const auto& [name, p] : params) out.push_back(p.dim() >= 2);
  return out;
}

double clip_grad_norm(const model::NamedTensors& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& [name, p] : params)
    if (p.grad().defined()) norms.push_back(p.grad().detach().to(torch::kFloat32).norm());
  if (norms.empty()) return 0.0;
  const double total = torch::stack(norms).norm().item<double>();
  if (max_norm > 0) {
    const double coef = max_norm / (total + 1e-6);
    if (coef < 1.0)
      for (const auto& [name, p] : params)
        if (p.grad().defined()) p.grad().mul_(coef);
  }
  return total;
}

}  // namespace spartan::trainer
