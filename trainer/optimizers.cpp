#include "trainer/optimizers.h"

#include <cstdio>

#include "common/error.h"

namespace spartan::trainer {

int64_t sum_over_stages(parallel::Grid& grid, int64_t n) {
  auto t = torch::tensor({n}, torch::kInt64);
  grid.pp().all_reduce(t);
  return t.item<int64_t>();
}

Optimizers::Optimizers(const Config& config, const adapters::ParameterGroups& groups,
                       parallel::Grid& grid, int64_t total_steps)
    : config_(config),
      grid_(grid),
      main_params_(groups.main),
      gate_params_(groups.gates),
      main_(groups.main, decay_matrices(groups.main),
            {config.optim.beta1, config.optim.beta2, config.optim.eps, config.optim.weight_decay}),
      xi_schedule_(config.adapter.sora.schedule, config.adapter.sora.lambda2,
                   config.adapter.sora.max_lambda, config.adapter.sora.lambda_num, total_steps) {
  const auto& o = config.optim;
  const auto& sora = config.adapter.sora;
  for (const auto& [name, g] : gate_params_) gate_entries_ += g.numel();
  total_gate_entries_ = sum_over_stages(grid_, gate_entries_);
  if (total_gate_entries_ == 0) return;
  gates_ = std::make_unique<GateOptimizer>(
      gate_params_, sora.lambda2, sora.threshold, o.beta1, o.beta2,
      sora.adam == GateAdam::torch ? AdamWOptions::Form::torch : AdamWOptions::Form::hf);
  if (grid_.rank() == 0)
    std::printf(
        "SoRA gates: %lld entries, %s AdamW, threshold \"%s\" with xi = %g, L1 weight "
        "%g\n",
        static_cast<long long>(total_gate_entries_), name_of(sora.adam).c_str(),
        name_of(sora.threshold).c_str(), sora.lambda2, sora.lambda1);
}

void Optimizers::add_l1_gradient() {
  if (grid_.tp_rank() != 0 || grid_.dp_rank() != 0 || gate_params_.empty()) return;
  const double share = double(gate_entries_) / double(total_gate_entries_);
  l1_penalty(gate_params_, config_.adapter.sora.lambda1 * share).backward();
}

double Optimizers::gate_lr(double lr) const {
  const double gate_lr = config_.adapter.sora.gate_lr;
  return gate_lr > 0 ? lr * gate_lr / config_.optim.lr : lr;
}

void Optimizers::step(int64_t step, double lr) {
  main_.step(lr);
  if (!gates_) return;
  gates_->set_xi(xi_schedule_.xi(step));
  gates_->step(gate_lr(lr));
}

void Optimizers::zero_grad() {
  main_.zero_grad();
  if (gates_) gates_->zero_grad();
}

int64_t Optimizers::nonzero_gates() const {
  return gates_ ? sum_over_stages(grid_, gates_->nonzero()) : 0;
}

namespace {

void add_entries(const model::Llama& model, const model::NamedTensors& ps, AdamW& opt,
                 std::vector<checkpoints::Entry>& out) {
  for (size_t i = 0; i < ps.size(); ++i) {
    const auto pl = model->placement(ps[i].first);
    out.push_back({"params/" + ps[i].first, ps[i].second, pl});
    out.push_back({"optim/" + ps[i].first + "/exp_avg", opt.exp_avg()[i], pl});
    out.push_back({"optim/" + ps[i].first + "/exp_avg_sq", opt.exp_avg_sq()[i], pl});
  }
}

void restore_group(const checkpoints::Checkpoint& ck, const model::Llama& model,
                   parallel::Grid& grid, const model::NamedTensors& ps, AdamW& opt, int64_t steps) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> avg, avg_sq;
  for (const auto& [name, p] : ps) {
    const auto pl = model->placement(name);
    p.copy_(ck.local("params/" + name, pl, p, grid));
    avg.push_back(ck.local("optim/" + name + "/exp_avg", pl, p, grid).to(p.device()));
    avg_sq.push_back(ck.local("optim/" + name + "/exp_avg_sq", pl, p, grid).to(p.device()));
  }
  opt.load_state(avg, avg_sq, steps);
}

}  // namespace

void Optimizers::entries(const model::Llama& model, std::vector<checkpoints::Entry>& out) {
  add_entries(model, main_params_, main_, out);
  if (gates_) add_entries(model, gate_params_, gates_->adam(), out);
}

nlohmann::json Optimizers::state() const {
  return {{"adam_steps", main_.steps()}, {"gate_adam_steps", gates_ ? gates_->adam().steps() : 0}};
}

void Optimizers::restore(const checkpoints::Checkpoint& ck, const model::Llama& model) {
  const auto& state = ck.manifest()["state"];
  restore_group(ck, model, grid_, main_params_, main_, state.value("adam_steps", int64_t(0)));
  if (gates_)
    restore_group(ck, model, grid_, gate_params_, gates_->adam(),
                  state.value("gate_adam_steps", int64_t(0)));
}

}  // namespace spartan::trainer
