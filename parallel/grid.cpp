#include "parallel/grid.h"

#include "common/error.h"
#include "parallel/mpi.h"
#include "parallel/nccl.h"

namespace spartan::parallel {

std::unique_ptr<Grid> Grid::solo() {
  std::unique_ptr<Grid> g(new Grid);
  g->tp_ = make_solo("tp");
  g->pp_ = make_solo("pp");
  g->dp_ = make_solo("dp");
  g->world_ = make_solo("world");
  return g;
}

namespace {

// An MPI group as the transport asks: itself on the CPU, routed by device on a GPU.
std::unique_ptr<Communicator> group(std::unique_ptr<Communicator> mpi, const Transport& transport) {
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
  std::unique_ptr<Grid> g(new Grid);
  g->layout_ = layout;
  auto world_mpi = mpi_world();
  const Transport t = agreed(transport, *world_mpi);
  g->world_ = group(std::move(world_mpi), t);
  g->world_->reset_stats();  // the agreement is not the job's traffic
  const int r = g->world_->rank();
  g->rank_ = r;
  const int tp = static_cast<int>(layout.tp), dp = static_cast<int>(layout.dp);
  const int tp_idx = r % tp, dp_idx = (r / tp) % dp, pp_idx = r / (tp * dp);
  g->tp_ = group(mpi_split("tp", pp_idx * dp + dp_idx, tp_idx), t);
  g->dp_ = group(mpi_split("dp", pp_idx * tp + tp_idx, dp_idx), t);
  g->pp_ = group(mpi_split("pp", dp_idx * tp + tp_idx, pp_idx), t);
  return g;
}

std::string Grid::coordinates() const {
  return "rank " + std::to_string(rank_) + " (dp " + std::to_string(dp_->rank()) + ", pp " +
         std::to_string(pp_->rank()) + ", tp " + std::to_string(tp_->rank()) + ")";
}

void Grid::reset_stats() {
  for (auto* c : {tp_.get(), pp_.get(), dp_.get(), world_.get()}) c->reset_stats();
}

CommStats Grid::total_stats() const {
  CommStats s;
  for (auto* c : {tp_.get(), pp_.get(), dp_.get(), world_.get()}) {
    s.calls += c->stats().calls;
    s.bytes += c->stats().bytes;
    s.seconds += c->stats().seconds;
  }
  return s;
}

}  // namespace spartan::parallel
