#include "launcher/model_shape.h"

#include <algorithm>

#include "adapters/method.h"
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

model::LlamaArch model_arch(const Config& c, std::string* origin) {
  const bool folder = !c.model.path.empty() && file_exists(c.model.path + "/config.json");
  if (origin) *origin = folder ? c.model.path + "/config.json" : "[model.init] of " + c.file;
  return folder ? model::read_hf_config(c.model.path) : model::arch_from_init(c.model.init);
}

ModelShape init_shape(const Config& config) {
  const ModelInitConfig& i = config.model.init;
  return {i.vocab_size, i.num_layers, i.num_heads, i.num_kv_heads,
          "[model.init] of " + config.file};
}

model::MemoryInputs memory_inputs(const Config& c, int64_t seq_len) {
  model::MemoryInputs in;
  in.tp = c.parallel.tp;
  in.pp = c.parallel.pp;
  in.base_dtype_bytes = bytes_of(resolved(c.model.dtype, /*cuda=*/false));  // on the CPU
  in.seq_len = seq_len;
  in.micro_batch = c.optim.micro_batch_size;
  in.micro_batches =
      std::max<int64_t>(1, c.optim.global_batch_size / (c.optim.micro_batch_size * c.parallel.dp));
  const adapters::Method& m = adapters::method(c.adapter.method);
  in.full = m.site() == adapters::Site::base;
  if (m.sized_by_rank()) {
    in.adapter_r = c.adapter.r;
    in.adapter_targets = static_cast<int64_t>(c.adapter.targets.size());
  }
  return in;
}

void check_memory_fits(const model::LlamaArch& arch, const model::MemoryInputs& in, double limit_gb,
                       const std::string& where) {
  const double limit = limit_gb > 0 ? limit_gb * 1e9 : model::machine_memory_per_rank();
  model::check_memory(model::estimate_memory(arch, in), limit, where);
}

}  // namespace spartan::launcher
