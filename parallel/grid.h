// The process grid: named axes, each with a communicator per line of ranks along it. Ranks are
// numbered with the first axis fastest. Spartan's layout is Megatron's order (TP fastest, then
// DP, then PP) so that the ranks of a TP group share a node:
//   rank = pp·(DP·TP) + dp·TP + tp
// Another kind of parallelism (a sequence or ZeRO axis) is another Axis: the grid splits any
// list of them, and the code that uses it asks for its group by name.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "parallel/communicator.h"

namespace spartan::parallel {

struct Axis {
  std::string name;
  int64_t size = 1;
};

struct Layout {
  int64_t tp = 1, pp = 1, dp = 1;
  int64_t world() const { return tp * pp * dp; }
  // The axes in rank order, fastest first: tp, dp, pp.
  std::vector<Axis> axes() const { return {{"tp", tp}, {"dp", dp}, {"pp", pp}}; }
};

// How a rank's groups move CUDA tensors (parallel.backend resolved for the runtime's device).
struct Transport {
  int cuda_device = -1;  // the rank's GPU; -1: a CPU run, every tensor goes by MPI
  bool nccl = false;     // CUDA tensors by NCCL; false: staged through host memory, by MPI
};

class Grid {
 public:
  // The grid of this job: MPI's world when launched by an MPI launcher or when the layout needs
  // more than one rank, else one process with solo groups. A world size that is not the
  // layout's is a UsageError naming `where`, raised identically on every rank.
  // With `transport.cuda_device`, each group routes CPU tensors to MPI and CUDA tensors to NCCL
  // (or stages them through host memory: route_by_device).
  static std::unique_ptr<Grid> create(const Layout& layout, const std::string& where,
                                      const Transport& transport = {});
  // A grid over any named axes (first fastest); MPI's world must hold their product. Groups
  // of axes named tp, pp or dp make layout(); an axis missing from the list has size 1.
  static std::unique_ptr<Grid> create(const std::vector<Axis>& axes, const std::string& where,
                                      const Transport& transport = {});
  // One process, no MPI.
  static std::unique_ptr<Grid> solo();

  const Layout& layout() const { return layout_; }
  const std::vector<Axis>& axes() const { return axes_; }
  int rank() const { return rank_; }
  int world_size() const { return world_->size(); }
  // The group of the ranks that differ from this one only along `axis`; an axis the grid does
  // not have is an Error.
  Communicator& group(const std::string& axis);
  const Communicator& group(const std::string& axis) const;
  // This rank's index along `axis` (its rank in group(axis)).
  int coordinate(const std::string& axis) const { return group(axis).rank(); }

  int tp_rank() const { return coordinate("tp"); }
  int pp_rank() const { return coordinate("pp"); }
  int dp_rank() const { return coordinate("dp"); }
  bool first_stage() const { return pp_rank() == 0; }
  bool last_stage() const { return pp_rank() == layout_.pp - 1; }

  Communicator& tp() { return group("tp"); }
  Communicator& pp() { return group("pp"); }
  Communicator& dp() { return group("dp"); }
  Communicator& world() { return *world_; }

  // "rank 3 (pp 0, dp 1, tp 1)": the slowest axis first.
  std::string coordinates() const;
  // Zeroes the communication counters of every group.
  void reset_stats();
  // Seconds and bytes spent in this rank's groups since the last reset.
  CommStats total_stats() const;

 private:
  Grid() = default;
  Layout layout_;
  std::vector<Axis> axes_;
  int rank_ = 0;
  std::vector<std::unique_ptr<Communicator>> groups_;  // one per axis, in the order of axes_
  std::unique_ptr<Communicator> world_;
};

}  // namespace spartan::parallel
