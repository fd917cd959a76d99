// NCCL communicators for CUDA tensors, built when CUDA and NCCL are found (SPARTAN_HAVE_NCCL).
// The unique id is made on the group's rank 0 and broadcast over the MPI communicator of the same
// group (DESIGN.md §4). Operations run on torch's current stream and the host waits for each
// before returning (so the counters hold real time), polling NCCL's asynchronous errors and
// parallel.timeout_s (collective_timeout): a hung collective becomes an error naming it.
// start_all_reduce runs on a side stream and is waited for by Pending::wait.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace spartan::parallel {

// Whether this build has NCCL.
bool nccl_available();
// An NCCL communicator over the ranks of `bootstrap` (an MPI group) on CUDA device `device`.
// Throws spartan::Error in a build without NCCL.
std::unique_ptr<Communicator> make_nccl(Communicator& bootstrap, int device);

}  // namespace spartan::parallel
