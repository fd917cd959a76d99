#include "adapters/full.h"

#include "common/error.h"

namespace spartan::adapters {

void FullMethod::attach(model::Llama& model, const AdapterConfig&) const {
  if (model->arch().tie_word_embeddings && !holds_every_layer(model))
    throw UsageError(
        "full fine-tuning of a model with a tied LM head cannot split it into "
        "pipeline stages (the embedding and the head would train apart)",
        "[parallel] pp", "set parallel.pp = 1 or use an adapter method");
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    if (model->projection(l, model::Proj::k)->slice().holders > 1)
      throw UsageError("full training with more TP ranks than KV heads", "[parallel] tp",
                       "use tp <= num_kv_heads for method \"full\"");
  model->set_base_trainable(true);
}

ParameterCount FullMethod::count(const model::LlamaArch& arch, const AdapterConfig&) const {
  ParameterCount n;
  n.shared = n.formula_value = arch.num_parameters();
  n.formula = "every base parameter";
  n.insertions = 0;
  return n;
}

}  // namespace spartan::adapters
