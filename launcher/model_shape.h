// The model shape a configuration refers to: config.json of [model] path when that exists,
// otherwise [model.init] (the origin says which, and that the folder is not there yet).
#pragma once

#include <string>

#include "common/config.h"
#include "model/memory.h"

namespace spartan::launcher {

ModelShape model_shape(const Config& config);
// The whole architecture by the same rule; `origin`, if given, receives where it came from.
model::LlamaArch model_arch(const Config& config, std::string* origin = nullptr);
// Always the shape of [model.init] (for `spartan model init`).
ModelShape init_shape(const Config& config);

// What a run with this configuration needs on one rank (model/memory.h); `seq_len` 0 counts
// the weights only.
model::MemoryInputs memory_inputs(const Config& config, int64_t seq_len);

// Refuses, before anything is allocated, a job whose estimate exceeds `limit_gb` (0: the
// machine's share per rank); `where` names what set the sizes.
void check_memory_fits(const model::LlamaArch& arch, const model::MemoryInputs& in, double limit_gb,
                       const std::string& where);

}  // namespace spartan::launcher
