#include "launcher/model_shape.h"

#include "common/files.h"
#include "model/hf_config.h"

namespace spartan::launcher {

ModelShape model_shape(const Config& config) {
  if (!config.model.path.empty() && file_exists(config.model.path + "/config.json")) {
    model::LlamaArch a = model::read_hf_config(config.model.path);
    return {a.vocab_size, a.num_layers, a.num_heads, a.num_kv_heads,
            config.model.path + "/config.json"};
  }
  ModelShape shape = init_shape(config);
  if (!config.model.path.empty())
    shape.origin += "; model.path " + config.model.path + " has no config.json yet";
  return shape;
}

ModelShape init_shape(const Config& config) {
  const ModelInitConfig& i = config.model.init;
  return {i.vocab_size, i.num_layers, i.num_heads, i.num_kv_heads, "[model.init] of " + config.file};
}

}  // namespace spartan::launcher
