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
  bool on_device(const torch::Tensor& t) const { return device_ && t.defined() && t.is_cuda(); }
  // What `host_` moves in place of a CUDA tensor: a contiguous host copy (the tensor itself
  // where it is already in host memory or goes by `device_`).
  torch::Tensor staged(const torch::Tensor& t) const {
    if (!t.is_cuda() || device_) return t.is_contiguous() ? t : t.contiguous();
    return t.to(torch::kCPU).contiguous();
  }
  template <class F>
  void timed(int64_t bytes, F&& op, const torch::Tensor& t) {
    const auto t0 = std::chrono::steady_clock::now();
    op(on_device(t) ? *device_ : *host_);
    count(bytes, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  std::unique_ptr<Communicator> host_, device_;
};

std::unique_ptr<Communicator> route_by_device(std::unique_ptr<Communicator> host,
                                              std::unique_ptr<Communicator> device) {
  return std::make_unique<Routed>(std::move(host), std::move(device));
}

}  // namespace spartan::parallel
