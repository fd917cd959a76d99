#include "trainer/stage.h"

#include <algorithm>

#include "parallel/runtime.h"

namespace spartan::trainer {

parallel::PipelineStage model_stage(model::Llama& model, const torch::Tensor& host_ids,
                                    const torch::Tensor& host_labels, int64_t micro_batch,
                                    LossesFn on_losses) {
  const auto ids = host_ids.to(model->device()), labels = host_labels.to(model->device());
  const int64_t rows = ids.size(0), T = ids.size(1);
  auto rows_of = [rows, micro_batch](int64_t i) {
    return std::min(micro_batch, rows - i * micro_batch);
  };
  parallel::PipelineStage s;
  s.micro_batches = (rows + micro_batch - 1) / micro_batch;
  s.activation_options = torch::dtype(model->dtype()).device(model->device());
  const int64_t width = model->prompt_length() + T, H = model->arch().hidden_size;
  s.activation_shape = [rows_of, width, H](int64_t i) {
    return std::vector<int64_t>{rows_of(i), width, H};
  };
  s.forward = [&model, ids, labels, micro_batch, rows_of, on_losses](int64_t i,
                                                                     const torch::Tensor& in) {
    const int64_t b = rows_of(i);
    parallel::ComputeScope compute(model->device(), model->compute_dtype());
    auto h = model->has_embedding() ? model->embed(ids.narrow(0, i * micro_batch, b)) : in;
    h = model->run_layers(h);
    if (!model->has_head()) return h.to(model->dtype());  // what the next stage expects
    return on_losses(i, model->head_losses(h, labels.narrow(0, i * micro_batch, b)));
  };
  return s;
}

}  // namespace spartan::trainer
