// The process grid: world = DP × PP × TP, ranks in Megatron's order (TP fastest, then DP, then
// PP) so the ranks of a TP group share a node:
//   rank = pp·(DP·TP) + dp·TP + tp
// and one communicator per group this rank belongs to.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace spartan::parallel {

struct Layout {
  int64_t tp = 1, pp = 1, dp = 1;
  int64_t world() const { return tp * pp * dp; }
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
  // One process, no MPI.
  static std::unique_ptr<Grid> solo();

  const Layout& layout() const { return layout_; }
  int rank() const { return rank_; }
  int world_size() const { return static_cast<int>(layout_.world()); }
  int tp_rank() const { return tp_->rank(); }
  int pp_rank() const { return pp_->rank(); }
  int dp_rank() const { return dp_->rank(); }
  bool first_stage() const { return pp_rank() == 0; }
  bool last_stage() const { return pp_rank() == layout_.pp - 1; }

  Communicator& tp() { return *tp_; }
  Communicator& pp() { return *pp_; }
  Communicator& dp() { return *dp_; }
  Communicator& world() { return *world_; }

  // "rank 3 (dp 1, pp 0, tp 1)"
  std::string coordinates() const;
  // Zeroes the communication counters of every group.
  void reset_stats();
  // Seconds and bytes spent in this rank's groups since the last reset.
  CommStats total_stats() const;

 private:
  Grid() = default;
  Layout layout_;
  int rank_ = 0;
  std::unique_ptr<Communicator> tp_, pp_, dp_, world_;
};

}  // namespace spartan::parallel
