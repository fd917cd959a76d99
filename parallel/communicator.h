// Collective and point-to-point communication within one group of ranks (DESIGN.md §4).
//
// Implementations: MPI for CPU tensors (what CI runs), NCCL for CUDA tensors (built when CUDA
// and NCCL are found), and Solo, the group of one rank, whose operations cost nothing, so code
// written for a group runs unchanged on one process.
//
// Every operation is counted per communicator: calls, payload bytes and seconds spent in it.
// Payload bytes are what this rank contributes: the tensor of all_reduce and broadcast, the
// local input of all_gather and reduce_scatter, the tensor sent or received. The counts let
// tests compare a step's traffic with the analytic count, and the trainer report the share of
// step time spent communicating.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

namespace spartan::parallel {

enum class ReduceOp { sum, avg, max };

// An operation started by Communicator::start_all_reduce and not yet known to be complete.
class Pending {
 public:
  virtual ~Pending() = default;
  // Lets the transport advance the operation; true once it is complete.
  virtual bool test() { return true; }
  // Returns when the result is in the tensor; errors (a peer gone, parallel.timeout_s) as the
  // blocking operation reports them.
  virtual void wait() {}
};

struct CommStats {
  int64_t calls = 0;
  int64_t bytes = 0;
  double seconds = 0;
};

class Communicator {
 public:
  explicit Communicator(std::string name) : name_(std::move(name)) {}
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  const std::string& name() const { return name_; }  // "tp", "pp", "dp", "world"
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: every rank ends with op over all ranks' tensors.
  virtual void all_reduce(torch::Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
  // Concatenation of every rank's tensor along `dim`, in rank order (equal shapes).
  virtual torch::Tensor all_gather(const torch::Tensor& t, int64_t dim) = 0;
  // The sum over ranks, split along `dim` into size() equal parts; this rank's part.
  virtual torch::Tensor reduce_scatter(const torch::Tensor& t, int64_t dim) = 0;
  virtual void broadcast(torch::Tensor& t, int root) = 0;
  virtual void send(const torch::Tensor& t, int dst) = 0;
  // Into `t`, which has the shape and dtype of what is sent.
  virtual void recv(torch::Tensor& t, int src) = 0;
  // Both at once (no deadlock when the peer does the same towards us).
  virtual void send_recv(const torch::Tensor& out, int dst, torch::Tensor& in, int src) = 0;
  virtual void barrier() = 0;

  // all_reduce's sum, started: where the transport can (MPI's nonblocking all-reduce, NCCL on a
  // stream of its own) it returns at once and the sum lands in `t` by the returned operation's
  // wait(); `t` must stay alive and untouched until then. Every rank starts a group's operations
  // in the same order, as for the blocking ones. By default the sum is done before it returns.
  virtual std::unique_ptr<Pending> start_all_reduce(torch::Tensor& t) {
    all_reduce(t);
    return std::make_unique<Pending>();
  }

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 protected:
  // Adds one call of `bytes` taking `seconds`.
  void count(int64_t bytes, double seconds) {
    ++stats_.calls;
    stats_.bytes += bytes;
    stats_.seconds += seconds;
  }

 private:
  std::string name_;
  CommStats stats_;
};

// The group of one rank.
std::unique_ptr<Communicator> make_solo(const std::string& name);

// One group over two transports, chosen by where each tensor lives: CPU tensors go through `host`
// (MPI), CUDA tensors through `device` (NCCL). Without `device` (ranks sharing a GPU, which NCCL
// refuses, or parallel.backend = "mpi") CUDA tensors are staged through host memory and move by
// `host`. Every rank of a group passes tensors on the same kind of device, so the ranks of one
// operation always meet on the same transport. Counts each operation once, as the group's.
std::unique_ptr<Communicator> route_by_device(std::unique_ptr<Communicator> host,
                                              std::unique_ptr<Communicator> device);

// Bytes of a tensor's elements.
inline int64_t payload_bytes(const torch::Tensor& t) {
  return t.numel() * static_cast<int64_t>(t.element_size());
}

}  // namespace spartan::parallel
