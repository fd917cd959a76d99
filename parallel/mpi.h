// MPI: start-up, the world, and MPI communicators for CPU tensors. mpi.h stays in the .cpp.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace spartan::parallel {

// Whether this process was started by an MPI launcher (mpirun, mpiexec, srun with PMI/PMIx).
bool launched_by_mpi();
// Initialises MPI once (MPI_THREAD_FUNNELED); finalised at exit. Returns the world size.
int init_mpi();
bool mpi_initialized();
// This process's rank in MPI_COMM_WORLD and the world's size; before MPI_Init (or without MPI)
// what the launcher's environment says, else 0 and 1.
int world_rank();
int world_size();
// The MPI library's own version line (MPI_Get_library_version; callable before MPI_Init), e.g.
// "Open MPI v4.1.4, ...": the bundle for GPU machines runs on another Open MPI than the build.
std::string mpi_library_version();
// The host of a world rank (MPI_Get_processor_name, gathered by init_mpi).
std::string host_of(int world_rank);
// A start-up check that every rank makes on its own node (its files, its folders), agreed over
// the world: when it throws spartan::Error on some ranks, every rank throws the lowest failing
// rank's error, naming the hosts and ranks that failed when the others did not. Collective; runs
// `check_here` alone without MPI.
void check_on_every_rank(const std::function<void()>& check_here);
// A limit on how long one MPI operation may take: past it, the rank prints an error naming the
// operation, its group and the peers (rank and host) it waits for, and ends the job (MPI_Abort).
// NCCL's communicators (parallel/nccl.h) read the same limit. 0 = no limit (the default).
void set_collective_timeout(double seconds);
double collective_timeout();
// Ends the whole job with `code` from any rank (MPI_Abort); a no-op without MPI.
void abort_job(int code);

// MPI_COMM_WORLD, and its split into groups: ranks with the same `color` form a group, ordered
// by `key`.
std::unique_ptr<Communicator> mpi_world();
std::unique_ptr<Communicator> mpi_split(const std::string& name, int color, int key);

}  // namespace spartan::parallel
