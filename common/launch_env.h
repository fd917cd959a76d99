// What the MPI launcher (mpirun, srun, MPICH's Hydra) tells a rank about its node, and
// SPARTAN_GPU_PER_RANK, which `spartan launch` and `spartan slurm` set when each rank gets a GPU
// of its own (launcher/cluster.h). Read where a rank needs them: binding its GPU at start-up,
// choosing its device and its transport.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace spartan {

// This rank's index among the ranks of its node: the first of Open MPI's, Slurm's and MPICH's
// variables that is set; none when no launcher started the process.
inline std::optional<int> launcher_local_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return std::nullopt;
}

// How many ranks share this node, from the same launchers; 1 without one.
inline int launcher_local_size() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"})
    if (const char* v = std::getenv(var); v && *v) return std::atoi(v);
  return 1;
}

// Whether the launcher asked each rank to keep one GPU of its own (SPARTAN_GPU_PER_RANK=1).
inline bool gpu_per_rank() {
  const char* flag = std::getenv("SPARTAN_GPU_PER_RANK");
  return flag && std::string(flag) == "1";
}

}  // namespace spartan
