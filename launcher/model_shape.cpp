#include "launcher/model_shape.h"

#include "model/hf_config.h"

namespace spartan::launcher {

ModelShape model_shape(const Config& config) {
  if (!config.model.path.empty()) {
    model::LlamaArch a = model::read_hf_config(config.model.path);
    return {a.vocab_size, a.num_layers, a.num_heads, a.num_kv_heads,
            config.model.path + "/config.json"};
  }
  return init_shape(config);
}

ModelShape init_shape(const Config& config) {
  const ModelInitConfig& i = config.model.init;
  return {i.vocab_size, i.num_layers, i.num_heads, i.num_kv_heads, "[model.init] of " + config.file};
}

}  // namespace spartan::launcher
