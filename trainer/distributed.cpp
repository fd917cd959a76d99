#include "trainer/distributed.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cmath>
#include <functional>
#include <set>
#include <string>

#include "parallel/buckets.h"

namespace spartan::trainer {

using model::TpPlacement;

namespace {

// Calls `ready` each time autograd has accumulated a parameter's gradient.
class ReadyHook final : public torch::autograd::PostAccumulateGradHook {
 public:
  explicit ReadyHook(std::function<void()> ready) : ready_(std::move(ready)) {}
  void operator()(const torch::autograd::Variable&) override { ready_(); }

 private:
  std::function<void()> ready_;
};

}  // namespace

GradientSync::GradientSync(model::Llama& model, parallel::Grid& grid,
                           const model::NamedTensors& params, const model::NamedTensors& gates,
                           bool overlap, int64_t bucket_bytes)
    : grid_(grid), params_(params), slot_of_(params.size()), bucket_bytes_(bucket_bytes) {
  std::set<std::string> gate_names;
  for (const auto& [name, t] : gates) gate_names.insert(name);
  for (const auto& [name, t] : params_) {
    placement_.push_back(model->placement(name));
    gate_.push_back(gate_names.count(name) > 0);
  }
  for (size_t i = params_.size(); i-- > 0;) {
    slot_of_[i] = slot_.size();
    slot_.push_back(i);
  }
  hooked_ = overlap && grid_.layout().dp > 1;
  if (hooked_)
    for (size_t i = 0; i < params_.size(); ++i)
      torch::autograd::impl::set_post_acc_grad_hooks(
          params_[i].second, std::make_unique<ReadyHook>([this, i] { gradient_ready(i); }));
}

GradientSync::~GradientSync() {
  if (hooked_)
    for (auto& [name, p] : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

torch::Tensor GradientSync::gradient(size_t i) {
  auto& p = params_[i].second;
  if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);  // same buckets everywhere
  return p.grad();
}

void GradientSync::arm() {
  if (!hooked_) return;
  std::vector<parallel::BucketedSum::Slot> slots;
  for (size_t i : slot_)
    slots.push_back({params_[i].second.numel(), params_[i].second.scalar_type()});
  dp_sum_ = std::make_unique<parallel::BucketedSum>(
      grid_.dp(), slots, [this](size_t s) { return gradient(slot_[s]); }, bucket_bytes_);
}

void GradientSync::gradient_ready(size_t i) {
  if (dp_sum_) dp_sum_->ready(slot_of_[i]);
}

void GradientSync::reduce() {
  torch::NoGradGuard no_grad;
  started_in_backward_ = 0;
  if (grid_.layout().tp == 1 && grid_.layout().dp == 1) return;
  for (size_t i = 0; i < params_.size(); ++i) gradient(i);  // every rank steps every tensor
  if (dp_sum_) {
    dp_sum_->finish();
    started_in_backward_ = dp_sum_->started_early();
    dp_sum_.reset();
  } else if (grid_.layout().dp > 1) {
    std::vector<torch::Tensor> all;
    for (size_t i : slot_) all.push_back(params_[i].second.grad());
    parallel::all_reduce_buckets(all, grid_.dp(), bucket_bytes_);
  }
  std::vector<torch::Tensor> partial;
  for (size_t i = 0; i < params_.size(); ++i)
    if (placement_[i].kind == TpPlacement::partial) partial.push_back(params_[i].second.grad());
  parallel::all_reduce_buckets(partial, grid_.tp());
}

void GradientSync::agree_gates() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!gate_[i] || !params_[i].second.grad().defined()) continue;
    auto& g = params_[i].second.mutable_grad();
    grid_.dp().broadcast(g, 0);
    grid_.tp().broadcast(g, 0);
  }
}

double GradientSync::clip(double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& g = params_[i].second.grad();
    if (!g.defined()) continue;
    const bool counted = placement_[i].kind == TpPlacement::sharded || grid_.tp_rank() == 0;
    if (counted) norms.push_back(g.detach().to(torch::kFloat32).norm());
  }
  double local = norms.empty() ? 0.0 : torch::stack(norms).norm().item<double>();
  double total = local;
  if (grid_.layout().tp > 1 || grid_.layout().pp > 1) {
    auto sq = torch::tensor({local * local}, torch::kFloat64);
    grid_.tp().all_reduce(sq);
    grid_.pp().all_reduce(sq);
    total = std::sqrt(sq.item<double>());
  }
  if (max_norm > 0) {
    const double coef = max_norm / (total + 1e-6);
    if (coef < 1.0)
      for (auto& [name, p] : params_)
        if (p.grad().defined()) p.grad().mul_(coef);
  }
  return total;
}

std::vector<int64_t> gather_per_rank(parallel::Grid& grid, int64_t value) {
  const auto all = grid.world().all_gather(torch::tensor({value}, torch::kInt64), 0);
  return std::vector<int64_t>(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel());
}

int64_t entries_in_model(model::Llama& model, parallel::Grid& grid,
                         const model::NamedTensors& params) {
  auto n = torch::zeros({2}, torch::kInt64);  // sharded, replicated
  for (const auto& [name, t] : params)
    n[model->placement(name).kind == TpPlacement::sharded ? 0 : 1] += t.numel();
  auto sharded = n.narrow(0, 0, 1).clone();
  grid.tp().all_reduce(sharded);
  n[0] = sharded[0];
  grid.pp().all_reduce(n);
  return n.sum().item<int64_t>();
}

namespace {

// A tensor's header: name length, rank, and up to kMaxDims sizes (zero-padded).
constexpr int64_t kMaxDims = 8;

void send_named(parallel::Communicator& c, const model::NamedTensors& ts, int dst) {
  c.send(torch::tensor({static_cast<int64_t>(ts.size())}), dst);
  for (const auto& [name, t] : ts) {
    auto header = torch::zeros({2 + kMaxDims}, torch::kInt64);
    header[0] = static_cast<int64_t>(name.size());
    header[1] = t.dim();
    for (int64_t d = 0; d < t.dim(); ++d) header[2 + d] = t.size(d);
    c.send(header, dst);
    c.send(torch::from_blob(const_cast<char*>(name.data()), {static_cast<int64_t>(name.size())},
                            torch::kUInt8),
           dst);
    c.send(t.to(torch::kFloat32).contiguous(), dst);
  }
}

void recv_named(parallel::Communicator& c, int src, model::NamedTensors& out) {
  auto n = torch::empty({1}, torch::kInt64);
  c.recv(n, src);
  for (int64_t i = 0; i < n.item<int64_t>(); ++i) {
    auto header = torch::empty({2 + kMaxDims}, torch::kInt64);
    c.recv(header, src);
    const int64_t* h = header.data_ptr<int64_t>();
    std::vector<int64_t> shape(h + 2, h + 2 + h[1]);
    auto name = torch::empty({h[0]}, torch::kUInt8);
    c.recv(name, src);
    auto t = torch::empty(shape, torch::kFloat32);
    c.recv(t, src);
    out.emplace_back(std::string(reinterpret_cast<const char*>(name.data_ptr()), h[0]), t);
  }
}

}  // namespace

model::NamedTensors gather_to_root(model::Llama& model, parallel::Grid& grid,
                                   const model::NamedTensors& params) {
  torch::NoGradGuard no_grad;
  model::NamedTensors mine;
  if (grid.dp_rank() != 0) return {};
  for (const auto& [name, t] : params) {
    const TpPlacement pl = model->placement(name);
    auto full =
        pl.kind == TpPlacement::sharded ? grid.tp().all_gather(t.detach(), pl.dim) : t.detach();
    mine.emplace_back(name, full.to(torch::kCPU));  // what rank 0 writes lives in host memory
  }
  if (grid.tp_rank() != 0) return {};
  parallel::Communicator& pp = grid.pp();
  if (pp.rank() != 0) {
    send_named(pp, mine, 0);
    return {};
  }
  for (int s = 1; s < pp.size(); ++s) recv_named(pp, s, mine);
  return mine;
}

}  // namespace spartan::trainer
