// The NCCL entry points of a build without CUDA/NCCL.
#include "common/error.h"
#include "parallel/nccl.h"

namespace spartan::parallel {

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl(Communicator&, int) {
  throw UsageError("this build of spartan has no NCCL", "[parallel] backend",
                   "use backend = \"mpi\", or rebuild where CUDA and NCCL are installed");
}

}  // namespace spartan::parallel
