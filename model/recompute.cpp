#include "model/recompute.h"

#include <ATen/autocast_mode.h>

#include "parallel/runtime.h"

namespace spartan::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autograd functions take defined tensors only: no prefix travels as an empty one.
torch::Tensor given(const torch::Tensor& prefix) {
  return prefix.numel() > 0 ? prefix : torch::Tensor();
}

// The default generator of `device`'s type, whose state dropout draws from.
at::Generator generator_of(const torch::Device& device) {
  return at::globalContext().defaultGenerator(device);
}

class RecomputedLayer : public torch::autograd::Function<RecomputedLayer> {
 public:
  // `anchor` requires a gradient and is used by nothing: it keeps the function in the graph when
  // neither x nor the prefix needs one (the first stage's input), since the parameters inside
  // the layer are not inputs of the function.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& prefix, const torch::Tensor& cos,
                               const torch::Tensor& sin, const torch::Tensor& anchor,
                               DecoderLayerImpl* layer) {
    const auto type = x.device().type();
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(type);
    ctx->saved_data["autocast_dtype"] = at::autocast::get_autocast_dtype(type);
    ctx->saved_data["rng"] = generator_of(x.device()).get_state();
    ctx->save_for_backward({x, prefix, cos, sin});
    return layer->forward(x, Rotary{cos, sin}, given(prefix));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    const auto& x0 = saved[0];
    const auto& prefix0 = saved[1];
    auto x = x0.detach().requires_grad_(ctx->needs_input_grad(0));
    auto prefix = given(prefix0).defined()
                      ? prefix0.detach().requires_grad_(ctx->needs_input_grad(1))
                      : torch::Tensor();
    torch::Tensor out;
    {
      auto gen = generator_of(x.device());
      const auto now = gen.get_state();
      gen.set_state(ctx->saved_data["rng"].toTensor());
      torch::AutoGradMode grad(true);
      // Only a ComputeScope turns autocast on in Spartan: the first pass's state is one again.
      parallel::ComputeScope cast(x.device(), ctx->saved_data["autocast"].toBool()
                                                  ? ctx->saved_data["autocast_dtype"].toScalarType()
                                                  : torch::kFloat32);
      out = layer->forward(x, Rotary{saved[2], saved[3]}, prefix);
      gen.set_state(now);
    }
    // The layer's parameters accumulate their gradients as in a plain backward pass; the inputs'
    // gradients are returned to the outer graph.
    torch::autograd::backward({out}, {grads[0]});
    return {x.requires_grad() ? x.grad() : torch::Tensor(),
            prefix.defined() && prefix.requires_grad() ? prefix.grad() : torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor recomputed_layer(DecoderLayerImpl& layer, const torch::Tensor& x, const Rotary& rope,
                               const torch::Tensor& prefix) {
  if (!torch::GradMode::is_enabled()) return layer.forward(x, rope, prefix);
  static const torch::Tensor anchor = torch::zeros({}, torch::requires_grad());
  static const torch::Tensor none = torch::empty({0});
  return RecomputedLayer::apply(x, prefix.defined() ? prefix : none, rope.cos, rope.sin, anchor,
                                &layer);
}

}  // namespace spartan::model
