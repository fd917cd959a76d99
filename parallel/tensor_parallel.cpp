#include "parallel/tensor_parallel.h"

namespace spartan::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Communicator* group_of(AutogradContext* ctx) {
  return reinterpret_cast<Communicator*>(ctx->saved_data["group"].toInt());
}
int64_t handle(Communicator& g) { return reinterpret_cast<int64_t>(&g); }

struct CopyToGroup : torch::autograd::Function<CopyToGroup> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t group) {
    ctx->saved_data["group"] = group;
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto g = grads[0].contiguous().clone();
    group_of(ctx)->all_reduce(g);
    return {g, torch::Tensor()};
  }
};

struct ReduceFromGroup : torch::autograd::Function<ReduceFromGroup> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t group) {
    auto y = x.contiguous().clone();
    reinterpret_cast<Communicator*>(group)->all_reduce(y);
    return y;
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    return {grads[0], torch::Tensor()};
  }
};

struct GatherFromGroup : torch::autograd::Function<GatherFromGroup> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t group) {
    ctx->saved_data["group"] = group;
    return reinterpret_cast<Communicator*>(group)->all_gather(x, x.dim() - 1);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Communicator* g = group_of(ctx);
    auto part = grads[0].chunk(g->size(), -1)[g->rank()].contiguous();
    return {part, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor copy_to_group(const torch::Tensor& x, Communicator& group) {
  if (group.size() == 1) return x;
  return CopyToGroup::apply(x, handle(group));
}

torch::Tensor reduce_from_group(const torch::Tensor& x, Communicator& group) {
  if (group.size() == 1) return x;
  return ReduceFromGroup::apply(x, handle(group));
}

torch::Tensor gather_from_group(const torch::Tensor& x, Communicator& group) {
  if (group.size() == 1) return x;
  return GatherFromGroup::apply(x, handle(group));
}

torch::Tensor vocab_parallel_embedding(const torch::Tensor& ids, const torch::Tensor& weight,
                                       int64_t vocab_start, Communicator& group) {
  if (group.size() == 1) return torch::embedding(weight, ids);
  auto outside = ids.lt(vocab_start).logical_or(ids.ge(vocab_start + weight.size(0)));
  auto local = (ids - vocab_start).masked_fill(outside, 0);
  auto rows = torch::embedding(weight, local).masked_fill(outside.unsqueeze(-1), 0.0);
  return reduce_from_group(rows, group);
}

torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits,
                                           const torch::Tensor& targets, int64_t vocab_start,
                                           Communicator& group) {
  namespace F = torch::nn::functional;
  if (group.size() == 1)
    return F::cross_entropy(
        logits, targets, F::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(-100));
  const int64_t V = logits.size(-1);
  // A constant shift per row leaves the loss and its gradient unchanged: no gradient through it.
  auto row_max = std::get<0>(logits.detach().max(-1)).contiguous();
  group.all_reduce(row_max, ReduceOp::max);
  auto shifted = logits - row_max.unsqueeze(-1);
  auto sum_exp = reduce_from_group(shifted.exp().sum(-1), group);
  auto ignored = targets.eq(-100);
  auto mine = targets.ge(vocab_start).logical_and(targets.lt(vocab_start + V));
  auto local = (targets - vocab_start).masked_fill(mine.logical_not(), 0);
  auto picked =
      shifted.gather(-1, local.unsqueeze(-1)).squeeze(-1).masked_fill(mine.logical_not(), 0.0);
  auto target_logit = reduce_from_group(picked, group);
  return (sum_exp.log() - target_logit).masked_fill(ignored, 0.0);
}

}  // namespace spartan::parallel
