#include "parallel/nccl.h"

#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "parallel/mpi.h"

namespace spartan::parallel {
namespace {

using Clock = std::chrono::steady_clock;

void check_nccl(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess)
    throw Error(std::string(what) + " failed: " + ncclGetErrorString(rc), "NCCL",
                "check NCCL_DEBUG=INFO output and that every rank runs the same command");
}

void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess)
    throw Error(std::string(what) + " failed: " + cudaGetErrorString(rc), "CUDA",
                "check the GPU assignment (CUDA_VISIBLE_DEVICES)");
}

ncclDataType_t nccl_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return ncclFloat32;
    case torch::kFloat64:
      return ncclFloat64;
    case torch::kBFloat16:
      return ncclBfloat16;
    case torch::kFloat16:
      return ncclFloat16;
    case torch::kInt64:
      return ncclInt64;
    case torch::kInt32:
      return ncclInt32;
    case torch::kUInt8:
      return ncclUint8;
    case torch::kBool:
      return ncclUint8;
    default:
      throw Error(std::string("NCCL cannot move ") + c10::toString(t) + " tensors", "NCCL",
                  "report this as a bug");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, int device)
      : Communicator(bootstrap.name()),
        rank_(bootstrap.rank()),
        size_(bootstrap.size()),
        device_(device) {
    check_cuda(cudaSetDevice(device), "cudaSetDevice");
    ncclUniqueId id;
    auto bytes = torch::zeros({static_cast<int64_t>(sizeof id)}, torch::kUInt8);
    if (rank_ == 0) {
      check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
      std::memcpy(bytes.data_ptr(), &id, sizeof id);
    }
    bootstrap.broadcast(bytes, 0);
    std::memcpy(&id, bytes.data_ptr(), sizeof id);
    check_nccl(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
    check_cuda(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~NcclCommunicator() override {
    cudaEventDestroy(event_);
    if (!aborted_) ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(torch::Tensor& t, ReduceOp op) override {
    const auto t0 = Clock::now();
    check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                             nccl_op(op), comm_, current()),
               "ncclAllReduce");
    done("all_reduce", payload_bytes(t), t0);
  }

  // On a stream of torch's pool that first waits for what the current stream has queued (the
  // gradients), so the sum runs beside the backward pass; wait() then makes the current stream
  // wait for it.
  std::unique_ptr<Pending> start_all_reduce(torch::Tensor& t) override {
    const auto t0 = Clock::now();
    auto side = at::cuda::getStreamFromPool(/*isHighPriority=*/true, device_);
    cudaEvent_t ready = nullptr, finished = nullptr;
    check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaEventCreateWithFlags(&finished, cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaEventRecord(ready, current()), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(side.stream(), ready, 0), "cudaStreamWaitEvent");
    cudaEventDestroy(ready);  // released once recorded work completes
    check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                             ncclSum, comm_, side.stream()),
               "ncclAllReduce");
    check_cuda(cudaEventRecord(finished, side.stream()), "cudaEventRecord");
    return std::make_unique<Started>(*this, t, finished, seconds_since(t0));
  }

  torch::Tensor all_gather(const torch::Tensor& t, int64_t dim) override {
    const auto t0 = Clock::now();
    auto in = t.contiguous();
    std::vector<int64_t> shape{size_};
    shape.insert(shape.end(), in.sizes().begin(), in.sizes().end());
    auto out = torch::empty(shape, in.options());
    check_nccl(ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), nccl_type(in.scalar_type()),
                             comm_, current()),
               "ncclAllGather");
    done("all_gather", payload_bytes(in), t0);
    return torch::cat(out.unbind(0), dim);
  }

  torch::Tensor reduce_scatter(const torch::Tensor& t, int64_t dim) override {
    const auto t0 = Clock::now();
    auto parts = torch::stack(t.chunk(size_, dim)).contiguous();
    auto out = torch::empty(parts.sizes().slice(1), parts.options());
    check_nccl(ncclReduceScatter(parts.data_ptr(), out.data_ptr(), out.numel(),
                                 nccl_type(out.scalar_type()), ncclSum, comm_, current()),
               "ncclReduceScatter");
    done("reduce_scatter", payload_bytes(t), t0);
    return out;
  }

  void broadcast(torch::Tensor& t, int root) override {
    const auto t0 = Clock::now();
    check_nccl(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                             root, comm_, current()),
               "ncclBroadcast");
    done("broadcast", payload_bytes(t), t0);
  }

  void send(const torch::Tensor& t, int dst) override {
    const auto t0 = Clock::now();
    auto c = t.contiguous();
    check_nccl(ncclSend(c.data_ptr(), c.numel(), nccl_type(c.scalar_type()), dst, comm_, current()),
               "ncclSend");
    done("send", payload_bytes(c), t0);
  }

  void recv(torch::Tensor& t, int src) override {
    const auto t0 = Clock::now();
    check_nccl(ncclRecv(t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), src, comm_, current()),
               "ncclRecv");
    done("recv", payload_bytes(t), t0);
  }

  void send_recv(const torch::Tensor& out, int dst, torch::Tensor& in, int src) override {
    const auto t0 = Clock::now();
    auto c = out.contiguous();
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    check_nccl(ncclSend(c.data_ptr(), c.numel(), nccl_type(c.scalar_type()), dst, comm_, current()),
               "ncclSend");
    check_nccl(
        ncclRecv(in.data_ptr(), in.numel(), nccl_type(in.scalar_type()), src, comm_, current()),
        "ncclRecv");
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    done("send_recv", payload_bytes(c) + payload_bytes(in), t0);
  }

  void barrier() override {
    const auto t0 = Clock::now();
    auto one = torch::zeros(
        {1}, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kCUDA, device_));
    check_nccl(
        ncclAllReduce(one.data_ptr(), one.data_ptr(), 1, ncclFloat32, ncclSum, comm_, current()),
        "ncclAllReduce");
    done("barrier", 0, t0);
  }

 private:
  // A sum started on a side stream.
  class Started final : public Pending {
   public:
    Started(NcclCommunicator& group, torch::Tensor t, cudaEvent_t finished, double seconds)
        : group_(group), t_(std::move(t)), finished_(finished), seconds_(seconds) {}
    ~Started() override {
      // Abandoned on an error path (the job is ending): NCCL may still write the tensor.
      if (!waited_) new torch::Tensor(std::move(t_));
      cudaEventDestroy(finished_);
    }
    bool test() override { return waited_ || cudaEventQuery(finished_) == cudaSuccess; }
    void wait() override {
      if (waited_) return;
      const auto t0 = Clock::now();
      group_.wait_for("all_reduce", finished_);
      check_cuda(cudaStreamWaitEvent(group_.current(), finished_, 0), "cudaStreamWaitEvent");
      waited_ = true;
      group_.count(payload_bytes(t_), seconds_ + seconds_since(t0));
    }

   private:
    NcclCommunicator& group_;
    torch::Tensor t_;
    cudaEvent_t finished_;
    double seconds_;
    bool waited_ = false;
  };

  static double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }
  cudaStream_t current() const { return at::cuda::getCurrentCUDAStream(device_).stream(); }

  // Waits until the work recorded in `event` has run. NCCL reports a failed peer as an
  // asynchronous error, and a peer that hangs not at all: past parallel.timeout_s the
  // communicator is aborted (its kernels return) and the operation is an error that names it.
  void wait_for(const char* op, cudaEvent_t event) {
    const double limit = collective_timeout();
    const auto t0 = Clock::now();
    for (int polls = 0;; ++polls) {
      const cudaError_t rc = cudaEventQuery(event);
      if (rc == cudaSuccess) return;
      if (rc != cudaErrorNotReady) check_cuda(rc, op);
      ncclResult_t async = ncclSuccess;
      check_nccl(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
      if (async != ncclSuccess && async != ncclInProgress) {
        abort();
        check_nccl(async, (std::string("NCCL ") + op + " over the '" + name() + "' group").c_str());
      }
      const double waited = seconds_since(t0);
      if (limit > 0 && waited > limit) {
        abort();
        throw Error("rank " + std::to_string(world_rank()) + " on " + host_of(world_rank()) +
                        " waited " + std::to_string(int(waited)) + " s in " + op + " over the '" +
                        name() + "' group (NCCL) without progress",
                    "parallel.timeout_s",
                    "look for another rank's error above (a peer failed, hangs or cannot be "
                    "reached); raise parallel.timeout_s if a step legitimately takes longer");
      }
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  void abort() {
    if (!aborted_) ncclCommAbort(comm_);
    aborted_ = true;
  }
  // Waits for the operation just queued on the current stream, so the counters hold real time.
  void done(const char* op, int64_t bytes, Clock::time_point t0) {
    check_cuda(cudaEventRecord(event_, current()), "cudaEventRecord");
    wait_for(op, event_);
    count(bytes, seconds_since(t0));
  }

  int rank_, size_, device_;
  ncclComm_t comm_ = nullptr;
  cudaEvent_t event_ = nullptr;
  bool aborted_ = false;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl(Communicator& bootstrap, int device) {
  return std::make_unique<NcclCommunicator>(bootstrap, device);
}

}  // namespace spartan::parallel
