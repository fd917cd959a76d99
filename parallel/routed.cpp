#include <chrono>

#include "parallel/communicator.h"

namespace spartan::parallel {

class Routed final : public Communicator {
 public:
  Routed(std::unique_ptr<Communicator> host, std::unique_ptr<Communicator> device)
      : Communicator(host->name()), host_(std::move(host)), device_(std::move(device)) {}

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }

  void all_reduce(torch::Tensor& t, ReduceOp op) override {
    timed(
        payload_bytes(t),
        [&](Communicator& c) {
          auto h = staged(t);
          c.all_reduce(h, op);
          if (!h.is_same(t)) t.copy_(h);
        },
        t);
  }
  // A CUDA tensor staged through host memory moves by the blocking all-reduce.
  std::unique_ptr<Pending> start_all_reduce(torch::Tensor& t) override {
    if (t.is_cuda() && !device_) {
      all_reduce(t, ReduceOp::sum);
      return std::make_unique<Pending>();
    }
    const auto t0 = Clock::now();
    auto inner = (on_device(t) ? *device_ : *host_).start_all_reduce(t);
    return std::make_unique<Started>(*this, std::move(inner), payload_bytes(t), since(t0));
  }
  torch::Tensor all_gather(const torch::Tensor& t, int64_t dim) override {
    torch::Tensor out;
    timed(
        payload_bytes(t), [&](Communicator& c) { out = c.all_gather(staged(t), dim); }, t);
    return out.to(t.device());
  }
  torch::Tensor reduce_scatter(const torch::Tensor& t, int64_t dim) override {
    torch::Tensor out;
    timed(
        payload_bytes(t), [&](Communicator& c) { out = c.reduce_scatter(staged(t), dim); }, t);
    return out.to(t.device());
  }
  void broadcast(torch::Tensor& t, int root) override {
    timed(
        payload_bytes(t),
        [&](Communicator& c) {
          auto h = staged(t);
          c.broadcast(h, root);
          if (!h.is_same(t)) t.copy_(h);
        },
        t);
  }
  void send(const torch::Tensor& t, int dst) override {
    timed(
        payload_bytes(t), [&](Communicator& c) { c.send(staged(t), dst); }, t);
  }
  void recv(torch::Tensor& t, int src) override {
    timed(
        payload_bytes(t),
        [&](Communicator& c) {
          auto h = staged(t);
          c.recv(h, src);
          if (!h.is_same(t)) t.copy_(h);
        },
        t);
  }
  void send_recv(const torch::Tensor& out, int dst, torch::Tensor& in, int src) override {
    timed(
        payload_bytes(out) + payload_bytes(in),
        [&](Communicator& c) {
          auto h = staged(in);
          c.send_recv(staged(out), dst, h, src);
          if (!h.is_same(in)) in.copy_(h);
        },
        out);
  }
  void barrier() override {
    timed(
        0, [&](Communicator& c) { c.barrier(); }, torch::Tensor());
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }
  // The transport's operation, counted as the group's once complete.
  class Started final : public Pending {
   public:
    Started(Routed& group, std::unique_ptr<Pending> inner, int64_t bytes, double seconds)
        : group_(group), inner_(std::move(inner)), bytes_(bytes), seconds_(seconds) {}
    bool test() override {
      if (!counted_ && inner_->test()) complete(0);
      return counted_;
    }
    void wait() override {
      if (counted_) return;
      const auto t0 = Clock::now();
      inner_->wait();
      complete(since(t0));
    }

   private:
    void complete(double seconds) {
      counted_ = true;
      group_.count(bytes_, seconds_ + seconds);
    }
    Routed& group_;
    std::unique_ptr<Pending> inner_;
    int64_t bytes_;
    double seconds_;
    bool counted_ = false;
  };

  bool on_device(const torch::Tensor& t) const { return device_ && t.defined() && t.is_cuda(); }
  // What `host_` moves in place of a CUDA tensor: a contiguous host copy (the tensor itself
  // where it is already in host memory or goes by `device_`).
  torch::Tensor staged(const torch::Tensor& t) const {
    if (!t.is_cuda() || device_) return t.is_contiguous() ? t : t.contiguous();
    return t.to(torch::kCPU).contiguous();
  }
  template <class F>
  void timed(int64_t bytes, F&& op, const torch::Tensor& t) {
    const auto t0 = Clock::now();
    op(on_device(t) ? *device_ : *host_);
    count(bytes, since(t0));
  }

  std::unique_ptr<Communicator> host_, device_;
};

std::unique_ptr<Communicator> route_by_device(std::unique_ptr<Communicator> host,
                                              std::unique_ptr<Communicator> device) {
  return std::make_unique<Routed>(std::move(host), std::move(device));
}

}  // namespace spartan::parallel
