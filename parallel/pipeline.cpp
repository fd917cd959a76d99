#include "parallel/pipeline.h"

#include <algorithm>
#include <deque>
#include <utility>

namespace spartan::parallel {
namespace {

class Runner {
 public:
  Runner(const PipelineStage& s, Communicator& pp)
      : s_(s), pp_(pp), first_(pp.rank() == 0), last_(pp.rank() == pp.size() - 1) {}

  torch::Tensor buffer(int64_t i) const {
    return torch::empty(s_.activation_shape(i), s_.activation_options);
  }
  torch::Tensor recv_forward(int64_t i) {
    if (first_) return {};
    auto t = buffer(i);
    pp_.recv(t, pp_.rank() - 1);
    return t.requires_grad_(true);
  }
  torch::Tensor forward(int64_t i, const torch::Tensor& in) {
    auto out = s_.forward(i, in);
    inflight_.emplace_back(in, out);
    return out;
  }
  void send_forward(const torch::Tensor& out) {
    if (!last_) pp_.send(out.detach(), pp_.rank() + 1);
  }
  torch::Tensor recv_backward(int64_t i) {
    if (last_) return {};
    auto g = buffer(i);
    pp_.recv(g, pp_.rank() + 1);
    return g;
  }
  // Sends `out` on and receives the gradient of micro-batch j's output (one exchange).
  torch::Tensor send_forward_recv_backward(const torch::Tensor& out, int64_t j) {
    if (last_) return {};
    auto g = buffer(j);
    pp_.send_recv(out.detach(), pp_.rank() + 1, g, pp_.rank() + 1);
    return g;
  }
  // Sends `grad` back and receives micro-batch i's input (one exchange).
  torch::Tensor send_backward_recv_forward(const torch::Tensor& grad, int64_t i) {
    if (first_) return {};
    auto t = buffer(i);
    pp_.send_recv(grad, pp_.rank() - 1, t, pp_.rank() - 1);
    return t.requires_grad_(true);
  }
  // Backward of the oldest micro-batch in flight; returns its input's gradient.
  torch::Tensor backward(const torch::Tensor& grad) {
    auto [in, out] = std::move(inflight_.front());
    inflight_.pop_front();
    if (s_.before_backward) s_.before_backward(backwards_);
    ++backwards_;
    if (last_)
      out.backward();
    else
      out.backward(grad);
    if (first_) return {};
    return in.grad().contiguous();
  }
  void send_backward(const torch::Tensor& g) {
    if (!first_) pp_.send(g, pp_.rank() - 1);
  }

 private:
  const PipelineStage& s_;
  Communicator& pp_;
  bool first_, last_;
  std::deque<std::pair<torch::Tensor, torch::Tensor>> inflight_;
  int64_t backwards_ = 0;  // the micro-batch of the next backward pass (they run in order)
};

}  // namespace

void train_1f1b(const PipelineStage& stage, Communicator& pp) {
  Runner r(stage, pp);
  const int64_t M = stage.micro_batches;
  const int64_t warmup = std::min<int64_t>(pp.size() - pp.rank() - 1, M);
  const int64_t steady = M - warmup;
  int64_t f = 0, b = 0;  // next micro-batch to run forward, backward
  for (int64_t i = 0; i < warmup; ++i, ++f) r.send_forward(r.forward(f, r.recv_forward(f)));
  torch::Tensor in = steady > 0 ? r.recv_forward(f) : torch::Tensor();
  for (int64_t i = 0; i < steady; ++i) {
    auto out = r.forward(f++, in);
    auto grad = r.send_forward_recv_backward(out, b);
    auto grad_in = r.backward(grad);
    ++b;
    if (i + 1 == steady)
      r.send_backward(grad_in);
    else
      in = r.send_backward_recv_forward(grad_in, f);
  }
  for (int64_t i = 0; i < warmup; ++i, ++b) r.send_backward(r.backward(r.recv_backward(b)));
}

void forward_only(const PipelineStage& stage, Communicator& pp) {
  torch::NoGradGuard no_grad;
  const bool first = pp.rank() == 0, last = pp.rank() == pp.size() - 1;
  for (int64_t i = 0; i < stage.micro_batches; ++i) {
    torch::Tensor in;
    if (!first) {
      in = torch::empty(stage.activation_shape(i), stage.activation_options);
      pp.recv(in, pp.rank() - 1);
    }
    auto out = stage.forward(i, in);
    if (!last) pp.send(out.contiguous(), pp.rank() + 1);
  }
}

}  // namespace spartan::parallel
