#include "parallel/nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>

#include "common/error.h"

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
      : Communicator(bootstrap.name()), rank_(bootstrap.rank()), size_(bootstrap.size()) {
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
  }
  ~NcclCommunicator() override { ncclCommDestroy(comm_); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(torch::Tensor& t, ReduceOp op) override {
    const auto t0 = Clock::now();
    check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                             nccl_op(op), comm_, stream_),
               "ncclAllReduce");
    done(payload_bytes(t), t0);
  }

  torch::Tensor all_gather(const torch::Tensor& t, int64_t dim) override {
    const auto t0 = Clock::now();
    auto in = t.contiguous();
    std::vector<int64_t> shape{size_};
    shape.insert(shape.end(), in.sizes().begin(), in.sizes().end());
    auto out = torch::empty(shape, in.options());
    check_nccl(ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), nccl_type(in.scalar_type()),
                             comm_, stream_),
               "ncclAllGather");
    done(payload_bytes(in), t0);
    return torch::cat(out.unbind(0), dim);
  }

  torch::Tensor reduce_scatter(const torch::Tensor& t, int64_t dim) override {
    const auto t0 = Clock::now();
    auto parts = torch::stack(t.chunk(size_, dim)).contiguous();
    auto out = torch::empty(parts.sizes().slice(1), parts.options());
    check_nccl(ncclReduceScatter(parts.data_ptr(), out.data_ptr(), out.numel(),
                                 nccl_type(out.scalar_type()), ncclSum, comm_, stream_),
               "ncclReduceScatter");
    done(payload_bytes(t), t0);
    return out;
  }

  void broadcast(torch::Tensor& t, int root) override {
    const auto t0 = Clock::now();
    check_nccl(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()),
                             root, comm_, stream_),
               "ncclBroadcast");
    done(payload_bytes(t), t0);
  }

  void send(const torch::Tensor& t, int dst) override {
    const auto t0 = Clock::now();
    auto c = t.contiguous();
    check_nccl(ncclSend(c.data_ptr(), c.numel(), nccl_type(c.scalar_type()), dst, comm_, stream_),
               "ncclSend");
    done(payload_bytes(c), t0);
  }

  void recv(torch::Tensor& t, int src) override {
    const auto t0 = Clock::now();
    check_nccl(ncclRecv(t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), src, comm_, stream_),
               "ncclRecv");
    done(payload_bytes(t), t0);
  }

  void send_recv(const torch::Tensor& out, int dst, torch::Tensor& in, int src) override {
    const auto t0 = Clock::now();
    auto c = out.contiguous();
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    check_nccl(ncclSend(c.data_ptr(), c.numel(), nccl_type(c.scalar_type()), dst, comm_, stream_),
               "ncclSend");
    check_nccl(
        ncclRecv(in.data_ptr(), in.numel(), nccl_type(in.scalar_type()), src, comm_, stream_),
        "ncclRecv");
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    done(payload_bytes(c) + payload_bytes(in), t0);
  }

  void barrier() override {
    const auto t0 = Clock::now();
    float* one = nullptr;
    check_cuda(cudaMalloc(&one, sizeof(float)), "cudaMalloc");
    check_nccl(ncclAllReduce(one, one, 1, ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce");
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    cudaFree(one);
    done(0, t0);
  }

 private:
  void done(int64_t bytes, Clock::time_point t0) {
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    count(bytes, std::chrono::duration<double>(Clock::now() - t0).count());
  }

  int rank_, size_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;  // the legacy default stream
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl(Communicator& bootstrap, int device) {
  return std::make_unique<NcclCommunicator>(bootstrap, device);
}

}  // namespace spartan::parallel
