// The model shape a configuration refers to: config.json of [model] path when that exists,
// otherwise [model.init] (the origin says which, and that the folder is not there yet).
#pragma once

#include "common/config.h"

namespace spartan::launcher {

ModelShape model_shape(const Config& config);
// Always the shape of [model.init] (for `spartan model init`).
ModelShape init_shape(const Config& config);

}  // namespace spartan::launcher
