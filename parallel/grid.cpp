#include "parallel/grid.h"

#include <algorithm>

#include "common/error.h"
#include "parallel/mpi.h"
#include "parallel/nccl.h"

namespace spartan::parallel {

std::unique_ptr<Grid> Grid::solo() {
  std::unique_ptr<Grid> g(new Grid);
  g->axes_ = Layout{}.axes();
  for (const Axis& a : g->axes_) g->groups_.push_back(make_solo(a.name));
  g->world_ = make_solo("world");
  return g;
}

namespace {

// An MPI group as the transport asks: itself on the CPU, routed by device on a GPU.
std::unique_ptr<Communicator> routed(std::unique_ptr<Communicator> mpi,
                                     const Transport& transport) {
  if (transport.cuda_device < 0) return mpi;
  auto nccl = transport.nccl ? make_nccl(*mpi, transport.cuda_device) : nullptr;
  return route_by_device(std::move(mpi), std::move(nccl));
}

// The transport every rank uses: ranks that disagree on computing on a GPU are an error on every
// rank (each node decides alone whether it sees one), and CUDA tensors go by NCCL only where
// every rank can use it (else they are staged through host memory everywhere).
Transport agreed(const Transport& mine, Communicator& world) {
  auto counts = torch::tensor({int64_t(mine.cuda_device >= 0), int64_t(mine.nccl)});
  world.all_reduce(counts);
  const int64_t gpus = counts[0].item<int64_t>(), nccl = counts[1].item<int64_t>();
  const int64_t n = world.size();
  if (gpus != 0 && gpus != n)
    throw UsageError(std::to_string(gpus) + " of the " + std::to_string(n) +
                         " ranks compute on a GPU and the others on the CPU",
                     "[run] device",
                     "start the job on nodes with a GPU for every rank, or set run.device = "
                     "\"cpu\"");
  Transport out = mine;
  out.nccl = nccl == n;
  return out;
}

}  // namespace

std::unique_ptr<Grid> Grid::create(const Layout& layout, const std::string& where,
                                   const Transport& transport) {
  const bool mpi = launched_by_mpi() || layout.world() > 1;
  const int world = mpi ? init_mpi() : 1;
  if (world != layout.world())
    throw UsageError(
        "the layout dp x pp x tp = " + std::to_string(layout.dp) + " x " +
            std::to_string(layout.pp) + " x " + std::to_string(layout.tp) + " = " +
            std::to_string(layout.world()) + " needs " + std::to_string(layout.world()) +
            " ranks, the job has " + std::to_string(world),
        where,
        "start it with mpirun -np " + std::to_string(layout.world()) + " or change [parallel]");
  if (world == 1) {
    auto g = solo();
    g->layout_ = layout;
    return g;
  }
  return create(layout.axes(), where, transport);
}

std::unique_ptr<Grid> Grid::create(const std::vector<Axis>& axes, const std::string& where,
                                   const Transport& transport) {
  int64_t product = 1;
  for (const Axis& a : axes) product *= a.size;
  const int world = init_mpi();
  if (world != product)
    throw UsageError("the grid's axes need " + std::to_string(product) + " ranks, the job has " +
                         std::to_string(world),
                     where, "start it with mpirun -np " + std::to_string(product));
  std::unique_ptr<Grid> g(new Grid);
  g->axes_ = axes;
  auto world_mpi = mpi_world();
  const Transport t = agreed(transport, *world_mpi);
  g->world_ = routed(std::move(world_mpi), t);
  g->world_->reset_stats();  // the agreement is not the job's traffic
  const int r = g->world_->rank();
  g->rank_ = r;
  // Along axis i (stride: the product of the sizes before it) the ranks that share every other
  // coordinate form one group, ordered by their coordinate along i. Every rank splits the axes
  // in the same order (MPI_Comm_split is collective).
  int64_t stride = 1;
  for (const Axis& a : axes) {
    const int64_t coordinate = (r / stride) % a.size;
    g->groups_.push_back(routed(
        mpi_split(a.name, static_cast<int>(r - coordinate * stride), static_cast<int>(coordinate)),
        t));
    stride *= a.size;
    if (a.name == "tp") g->layout_.tp = a.size;
    if (a.name == "pp") g->layout_.pp = a.size;
    if (a.name == "dp") g->layout_.dp = a.size;
  }
  for (const char* name : {"tp", "pp", "dp"})  // the layout's axes a grid was not given
    if (std::none_of(axes.begin(), axes.end(), [&](const Axis& a) { return a.name == name; })) {
      g->axes_.push_back({name, 1});
      g->groups_.push_back(make_solo(name));
    }
  return g;
}

Communicator& Grid::group(const std::string& axis) {
  return const_cast<Communicator&>(static_cast<const Grid&>(*this).group(axis));
}

const Communicator& Grid::group(const std::string& axis) const {
  for (size_t i = 0; i < axes_.size(); ++i)
    if (axes_[i].name == axis) return *groups_[i];
  throw Error("the grid has no axis '" + axis + "'", "parallel::Grid", "report this as a bug");
}

std::string Grid::coordinates() const {
  std::string out = "rank " + std::to_string(rank_) + " (";
  for (size_t i = axes_.size(); i-- > 0;)
    out += axes_[i].name + " " + std::to_string(groups_[i]->rank()) + (i ? ", " : ")");
  return out;
}

void Grid::reset_stats() {
  for (auto& c : groups_) c->reset_stats();
  world_->reset_stats();
}

CommStats Grid::total_stats() const {
  CommStats s;
  const auto add = [&](const Communicator& c) {
    s.calls += c.stats().calls;
    s.bytes += c.stats().bytes;
    s.seconds += c.stats().seconds;
  };
  for (const auto& c : groups_) add(*c);
  add(*world_);
  return s;
}

}  // namespace spartan::parallel
