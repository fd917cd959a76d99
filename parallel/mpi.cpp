#include "parallel/mpi.h"

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "common/error.h"

namespace spartan::parallel {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string(what) + " failed: " + std::string(text, len), "MPI",
              "check the MPI installation and that every rank runs the same command");
}

int to_int(int64_t n, const char* what) {
  if (n > INT_MAX)
    throw Error(std::string(what) + " of " + std::to_string(n) +
                    " elements exceeds MPI's int "
                    "counts",
                "MPI", "use smaller micro-batches or more tensor parallelism");
  return static_cast<int>(n);
}

MPI_Datatype mpi_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return MPI_FLOAT;
    case torch::kFloat64:
      return MPI_DOUBLE;
    case torch::kInt64:
      return MPI_INT64_T;
    case torch::kInt32:
      return MPI_INT32_T;
    case torch::kUInt8:
      return MPI_UINT8_T;
    case torch::kBool:
      return MPI_C_BOOL;
    default:
      throw Error(std::string("MPI reduction of ") + c10::toString(t) + " tensors", "MPI",
                  "reduce in fp32 (the trainer does)");
  }
}

// Every rank's host (MPI_Get_processor_name), gathered once by init_mpi: errors about a peer
// name its node. Written before any other thread exists, read-only afterwards.
std::vector<std::string>& host_table() {
  static auto* hosts = new std::vector<std::string>;  // never destroyed: the watchdog reads it
  return *hosts;
}

void gather_hosts() {
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int length = 0, size = 1;
  MPI_Get_processor_name(name, &length);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<char> all(static_cast<size_t>(size) * MPI_MAX_PROCESSOR_NAME);
  check(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME,
                      MPI_CHAR, MPI_COMM_WORLD),
        "MPI_Allgather");
  auto& hosts = host_table();
  hosts.clear();
  for (int r = 0; r < size; ++r) {
    const char* entry = all.data() + static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME;
    hosts.emplace_back(entry, strnlen(entry, MPI_MAX_PROCESSOR_NAME));
  }
}

// "rank 2 on h2"
std::string rank_on_host(int world_rank) {
  return "rank " + std::to_string(world_rank) + " on " + host_of(world_rank);
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }

// Half-precision tensors are reduced in fp32: MPI has no bf16 arithmetic.
bool reduced_in_fp32(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kFloat16;
}

// Turns a collective that never returns (a rank died without taking the job down, or hangs) into
// an error. Each MPI operation registers itself on entry and leaves on exit; a thread of its own
// checks once a second whether the current one has run longer than the limit and then ends the
// job. One operation at a time: the trainer calls MPI from one thread (MPI_THREAD_FUNNELED).
class Watchdog {
 public:
  static Watchdog& instance() {
    static auto* w = new Watchdog;  // never destroyed: its thread outlives static destructors
    return *w;
  }

  void set_limit(double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = seconds;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    if (limit_ > 0 && !thread_.joinable()) {
      thread_ = std::thread([this] { watch(); });
      thread_.detach();
    }
  }
  // `members`: the world ranks of the group; `peer`: the world rank of a point-to-point
  // operation's other side, or -1.
  void enter(const std::string& group, const char* op, const std::vector<int>& members, int peer) {
    std::lock_guard<std::mutex> lock(mutex_);
    busy_ = true;
    since_ = Clock::now();
    group_ = &group;
    op_ = op;
    members_ = &members;
    peer_ = peer;
  }
  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    busy_ = false;
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait_for(lock, std::chrono::seconds(1));
      if (!busy_ || limit_ <= 0 || since(since_) < limit_) continue;
      std::fprintf(stderr,
                   "spartan: error: rank %d of %d on %s waited %.0f s in %s over the '%s' group "
                   "(%s) without "
                   "progress: a peer failed, hangs or cannot be reached, parallel.timeout_s, look "
                   "for another rank's error above; raise parallel.timeout_s if a step "
                   "legitimately takes longer\n",
                   rank_, size_, host_of(rank_).c_str(), since(since_), op_, group_->c_str(),
                   peers().c_str());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
      std::_Exit(1);
    }
  }

  // "peer: rank 2 on h2", or "peers: rank 2 on h2, rank 4 on h3 and 5 more".
  std::string peers() const {
    if (peer_ >= 0) return "peer: " + rank_on_host(peer_);
    std::vector<int> others;
    for (int r : *members_)
      if (r != rank_) others.push_back(r);
    std::string text = others.size() == 1 ? "peer: " : "peers: ";
    const size_t shown = std::min<size_t>(others.size(), 4);
    for (size_t i = 0; i < shown; ++i) text += (i ? ", " : "") + rank_on_host(others[i]);
    if (others.size() > shown) text += " and " + std::to_string(others.size() - shown) + " more";
    return text;
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread thread_;
  double limit_ = 0;
  int rank_ = 0, size_ = 1;
  bool busy_ = false;
  Clock::time_point since_;
  const std::string* group_ = nullptr;
  const char* op_ = "";
  const std::vector<int>* members_ = nullptr;
  int peer_ = -1;
};

// Registers one MPI operation with the watchdog for its lifetime.
class Watched {
 public:
  Watched(const std::string& group, const char* op, const std::vector<int>& members,
          int peer = -1) {
    Watchdog::instance().enter(group, op, members, peer);
  }
  ~Watched() { Watchdog::instance().leave(); }
  Watched(const Watched&) = delete;
  Watched& operator=(const Watched&) = delete;
};

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(std::string name, MPI_Comm comm) : Communicator(std::move(name)), comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    // The world rank of each member, for errors that name a peer.
    MPI_Group group, world;
    MPI_Comm_group(comm_, &group);
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    std::vector<int> local(size_);
    for (int r = 0; r < size_; ++r) local[r] = r;
    members_.resize(size_);
    MPI_Group_translate_ranks(group, size_, local.data(), world, members_.data());
    MPI_Group_free(&group);
    MPI_Group_free(&world);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(torch::Tensor& t, ReduceOp op) override {
    const auto t0 = Clock::now();
    Watched watched(name(), "all_reduce", members_);
    TORCH_CHECK(t.is_contiguous() && t.device().is_cpu(), "all_reduce: contiguous CPU tensor");
    torch::Tensor buf = reduced_in_fp32(t) ? t.to(torch::kFloat32) : t;
    check(MPI_Allreduce(MPI_IN_PLACE, buf.data_ptr(), to_int(buf.numel(), "all_reduce"),
                        mpi_type(buf.scalar_type()), mpi_op(op), comm_),
          "MPI_Allreduce");
    if (op == ReduceOp::avg) buf.div_(size_);
    if (!buf.is_same(t)) t.copy_(buf);
    count(payload_bytes(t), since(t0));
  }

  std::unique_ptr<Pending> start_all_reduce(torch::Tensor& t) override {
    const auto t0 = Clock::now();
    TORCH_CHECK(t.is_contiguous() && t.device().is_cpu(), "all_reduce: contiguous CPU tensor");
    torch::Tensor buf = reduced_in_fp32(t) ? t.to(torch::kFloat32) : t;
    MPI_Request request;
    check(MPI_Iallreduce(MPI_IN_PLACE, buf.data_ptr(), to_int(buf.numel(), "all_reduce"),
                         mpi_type(buf.scalar_type()), MPI_SUM, comm_, &request),
          "MPI_Iallreduce");
    return std::make_unique<Started>(*this, t, buf, request, since(t0));
  }

  torch::Tensor all_gather(const torch::Tensor& t, int64_t dim) override {
    const auto t0 = Clock::now();
    Watched watched(name(), "all_gather", members_);
    auto in = t.contiguous();
    std::vector<int64_t> shape{size_};
    shape.insert(shape.end(), in.sizes().begin(), in.sizes().end());
    auto out = torch::empty(shape, in.options());
    const int bytes = to_int(payload_bytes(in), "all_gather");
    check(MPI_Allgather(in.data_ptr(), bytes, MPI_BYTE, out.data_ptr(), bytes, MPI_BYTE, comm_),
          "MPI_Allgather");
    count(payload_bytes(in), since(t0));
    return torch::cat(out.unbind(0), dim);
  }

  torch::Tensor reduce_scatter(const torch::Tensor& t, int64_t dim) override {
    const auto t0 = Clock::now();
    Watched watched(name(), "reduce_scatter", members_);
    TORCH_CHECK(t.size(dim) % size_ == 0, "reduce_scatter: size ", t.size(dim),
                " not divisible by ", size_);
    auto parts = torch::stack(t.chunk(size_, dim)).contiguous();  // (size, ...)
    if (reduced_in_fp32(parts)) parts = parts.to(torch::kFloat32);
    auto out = torch::empty(parts.sizes().slice(1), parts.options());
    check(MPI_Reduce_scatter_block(parts.data_ptr(), out.data_ptr(),
                                   to_int(out.numel(), "reduce_scatter"),
                                   mpi_type(out.scalar_type()), MPI_SUM, comm_),
          "MPI_Reduce_scatter_block");
    count(payload_bytes(t), since(t0));
    return out.to(t.scalar_type());
  }

  void broadcast(torch::Tensor& t, int root) override {
    const auto t0 = Clock::now();
    Watched watched(name(), "broadcast", members_);
    TORCH_CHECK(t.is_contiguous(), "broadcast: contiguous tensor");
    check(MPI_Bcast(t.data_ptr(), to_int(payload_bytes(t), "broadcast"), MPI_BYTE, root, comm_),
          "MPI_Bcast");
    count(payload_bytes(t), since(t0));
  }

  void send(const torch::Tensor& t, int dst) override {
    const auto t0 = Clock::now();
    Watched watched(name(), "send", members_, members_[dst]);
    auto c = t.contiguous();
    check(MPI_Send(c.data_ptr(), to_int(payload_bytes(c), "send"), MPI_BYTE, dst, 0, comm_),
          "MPI_Send");
    count(payload_bytes(c), since(t0));
  }

  void recv(torch::Tensor& t, int src) override {
    const auto t0 = Clock::now();
    Watched watched(name(), "recv", members_, members_[src]);
    TORCH_CHECK(t.is_contiguous(), "recv: contiguous tensor");
    check(MPI_Recv(t.data_ptr(), to_int(payload_bytes(t), "recv"), MPI_BYTE, src, 0, comm_,
                   MPI_STATUS_IGNORE),
          "MPI_Recv");
    count(payload_bytes(t), since(t0));
  }

  void send_recv(const torch::Tensor& out, int dst, torch::Tensor& in, int src) override {
    const auto t0 = Clock::now();
    Watched watched(name(), "send_recv", members_, members_[dst]);
    auto c = out.contiguous();
    TORCH_CHECK(in.is_contiguous(), "send_recv: contiguous tensor");
    check(MPI_Sendrecv(c.data_ptr(), to_int(payload_bytes(c), "send"), MPI_BYTE, dst, 0,
                       in.data_ptr(), to_int(payload_bytes(in), "recv"), MPI_BYTE, src, 0, comm_,
                       MPI_STATUS_IGNORE),
          "MPI_Sendrecv");
    count(payload_bytes(c) + payload_bytes(in), since(t0));
  }

  // A barrier is where ranks wait for long work on one of them (rank 0's merge at the end of a
  // run, its reading of a layer's files in a distributed prune): after a millisecond of polling
  // the wait sleeps between polls, so the waiting ranks leave the cores to the working one where
  // ranks share cores, instead of spinning in MPI_Barrier.
  void barrier() override {
    const auto t0 = Clock::now();
    Watched watched(name(), "barrier", members_);
    MPI_Request request;
    check(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier");
    for (int done = 0;;) {
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (done) break;
      if (since(t0) > 1e-3) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    count(0, since(t0));
  }

 private:
  // A nonblocking all-reduce: MPI advances it in MPI calls (test(), and every other operation
  // of the process); wait() is watched like a blocking operation. Counted once complete, with
  // the seconds spent starting and waiting for it.
  class Started final : public Pending {
   public:
    Started(MpiCommunicator& group, torch::Tensor t, torch::Tensor buf, MPI_Request request,
            double seconds)
        : group_(group),
          t_(std::move(t)),
          buf_(std::move(buf)),
          request_(request),
          seconds_(seconds) {}
    ~Started() override {
      // Abandoned on an error path (the job is ending): MPI may still write the buffer, and a
      // nonblocking collective's request cannot be freed, so the buffer is never released.
      if (!done_) new torch::Tensor(std::move(buf_));
    }
    bool test() override {
      if (done_) return true;
      int flag = 0;
      check(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE), "MPI_Test");
      if (flag) complete(0);
      return done_;
    }
    void wait() override {
      if (done_) return;
      const auto t0 = Clock::now();
      {
        Watched watched(group_.name(), "all_reduce", group_.members_);
        check(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait");
      }
      complete(since(t0));
    }

   private:
    void complete(double seconds) {
      done_ = true;
      if (!buf_.is_same(t_)) t_.copy_(buf_);
      group_.count(payload_bytes(t_), seconds_ + seconds);
    }
    MpiCommunicator& group_;
    torch::Tensor t_, buf_;
    MPI_Request request_;
    double seconds_;
    bool done_ = false;
  };

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::vector<int> members_;  // world rank of each rank of this group
};

class SoloCommunicator final : public Communicator {
 public:
  using Communicator::Communicator;
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce(torch::Tensor&, ReduceOp) override {}
  torch::Tensor all_gather(const torch::Tensor& t, int64_t) override { return t; }
  torch::Tensor reduce_scatter(const torch::Tensor& t, int64_t) override { return t; }
  void broadcast(torch::Tensor&, int) override {}
  void send(const torch::Tensor&, int) override { alone("send"); }
  void recv(torch::Tensor&, int) override { alone("recv"); }
  void send_recv(const torch::Tensor&, int, torch::Tensor&, int) override { alone("send_recv"); }
  void barrier() override {}

 private:
  [[noreturn]] void alone(const char* op) const {
    throw Error(std::string(op) + " in a group of one rank", name(), "report this as a bug");
  }
};

}  // namespace

std::unique_ptr<Communicator> make_solo(const std::string& name) {
  return std::make_unique<SoloCommunicator>(name);
}

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(var)) return true;
  return false;
}

bool mpi_initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string line(text, static_cast<size_t>(length));
  const auto end = line.find_first_of(",\n");  // the first clause names library and version
  return line.substr(0, end);
}

int init_mpi() {
  if (!mpi_initialized()) {
    // Serialized: on a GPU, autograd runs the backward pass of CUDA tensors on a thread of its
    // own, and collectives staged through host memory call MPI from there (one call at a time:
    // the main thread waits for the backward pass).
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_SERIALIZED)
      throw Error("the MPI library offers no MPI_THREAD_SERIALIZED", "MPI_Init_thread",
                  "use an MPI built with thread support (Open MPI 4 and 5 are)");
    std::atexit(finalize_at_exit);
    gather_hosts();
  }
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

namespace {
int from_env(std::initializer_list<const char*> vars, int fallback) {
  for (const char* v : vars)
    if (const char* s = std::getenv(v); s && *s) return std::atoi(s);
  return fallback;
}

// Whether MPI calls are allowed now: initialised and not yet finalised.
bool mpi_usable() {
  int finalized = 0;
  if (!mpi_initialized()) return false;
  MPI_Finalized(&finalized);
  return !finalized;
}

}  // namespace

int world_rank() {
  if (!mpi_usable()) return from_env({"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}, 0);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  if (!mpi_usable()) return from_env({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}, 1);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

std::string host_of(int world_rank) {
  const auto& hosts = host_table();
  if (world_rank < 0 || world_rank >= static_cast<int>(hosts.size())) return "an unknown host";
  return hosts[world_rank];
}

void check_on_every_rank(const std::function<void()>& check_here) {
  if (launched_by_mpi()) init_mpi();  // every rank of the job takes part, or none
  std::optional<Error> local;
  std::exception_ptr thrown;
  try {
    check_here();
  } catch (const Error& e) {
    local = e;
    thrown = std::current_exception();
  } catch (const std::exception& e) {
    local = Error(e.what(), "internal", "please report this with the command");
    thrown = std::current_exception();
  }
  if (!mpi_usable() || world_size() == 1) {
    if (thrown) std::rethrow_exception(thrown);
    return;
  }
  const int size = world_size();
  static const std::string kGroup = "world";
  std::vector<int> everyone(size);
  for (int r = 0; r < size; ++r) everyone[r] = r;
  Watched watched(kGroup, "a start-up check", everyone);  // a node that hangs in its check
  int failed = local ? 1 : 0;
  std::vector<int> flags(size);
  check(MPI_Allgather(&failed, 1, MPI_INT, flags.data(), 1, MPI_INT, MPI_COMM_WORLD),
        "MPI_Allgather");
  std::vector<int> failing;
  for (int r = 0; r < size; ++r)
    if (flags[r]) failing.push_back(r);
  if (failing.empty()) return;
  // The lowest failing rank's error, sent to every rank: its parts and its exit code.
  const int first = failing.front();
  std::string text = local ? local->problem() + '\x1f' + local->where() + '\x1f' + local->todo() +
                                 '\x1f' + std::to_string(local->exit_code())
                           : std::string();
  int length = static_cast<int>(text.size());
  check(MPI_Bcast(&length, 1, MPI_INT, first, MPI_COMM_WORLD), "MPI_Bcast");
  text.resize(length);
  check(MPI_Bcast(text.data(), length, MPI_CHAR, first, MPI_COMM_WORLD), "MPI_Bcast");
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t end = text.find('\x1f', begin);
    parts.push_back(text.substr(begin, end == std::string::npos ? end : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  parts.resize(4);
  const int code = std::atoi(parts[3].c_str());
  if (static_cast<int>(failing.size()) == size)  // every rank: the same problem everywhere
    throw JobError(parts[0], parts[1], parts[2], code);
  // Some hosts only: name them and their ranks.
  std::set<std::string> hosts;
  std::string ranks;
  for (size_t i = 0; i < failing.size(); ++i) {
    hosts.insert(host_of(failing[i]));
    if (i < 8) ranks += (i ? ", " : "") + std::to_string(failing[i]);
  }
  if (failing.size() > 8) ranks += " and " + std::to_string(failing.size() - 8) + " more";
  std::string on;
  for (const auto& h : hosts) on += (on.empty() ? "" : ", ") + h;
  throw JobError(parts[0] + " on " + on + " (" + (failing.size() == 1 ? "rank " : "ranks ") +
                     ranks + " of " + std::to_string(size) + "; the other ranks can)",
                 parts[1], parts[2] + "; the nodes of a job need the same files at the same paths",
                 code);
}

namespace {
std::atomic<double> g_collective_timeout{0};
}  // namespace

void set_collective_timeout(double seconds) {
  g_collective_timeout = seconds;
  if (mpi_usable()) Watchdog::instance().set_limit(seconds);
}

double collective_timeout() { return g_collective_timeout; }

void abort_job(int code) {
  if (mpi_initialized()) MPI_Abort(MPI_COMM_WORLD, code);
}

std::unique_ptr<Communicator> mpi_world() {
  return std::make_unique<MpiCommunicator>("world", MPI_COMM_WORLD);
}

std::unique_ptr<Communicator> mpi_split(const std::string& name, int color, int key) {
  MPI_Comm comm;
  check(MPI_Comm_split(MPI_COMM_WORLD, color, key, &comm), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(name, comm);
}

}  // namespace spartan::parallel
