#include "prune/layerwise.h"

namespace spartan::prune {

model::DecoderLayer load_layer(const model::WeightStore& store, const model::LlamaArch& arch,
                               int64_t index) {
  model::DecoderLayer layer(arch, torch::kFloat32);
  layer->materialize();
  torch::NoGradGuard no_grad;
  const std::string prefix = "model.layers." + std::to_string(index) + ".";
  for (auto& p : layer->named_parameters())
    p.value().copy_(store.load(prefix + p.key(), torch::kFloat32));
  layer->eval();
  return layer;
}

torch::Tensor embed(const model::WeightStore& store, const torch::Tensor& ids) {
  // Only the rows of the tokens that occur are read from the file.
  auto [unique, inverse] = torch::_unique(ids.flatten(), /*sorted=*/true, /*return_inverse=*/true);
  std::vector<torch::Tensor> rows;
  const int64_t* u = unique.data_ptr<int64_t>();
  for (int64_t i = 0; i < unique.numel(); ++i)
    rows.push_back(store.load_rows("model.embed_tokens.weight", u[i], u[i] + 1, torch::kFloat32));
  auto h = torch::cat(rows, 0).index_select(0, inverse);  // (N·T, H)
  return h.view({ids.size(0), ids.size(1), -1});
}

torch::Tensor run_layer(model::DecoderLayer& layer, const model::LlamaArch& arch,
                        const torch::Tensor& hidden, int64_t batch) {
  torch::NoGradGuard no_grad;
  const auto rope = model::rotary_tables(arch, hidden.size(1), torch::kFloat32, hidden.device());
  std::vector<torch::Tensor> out;
  for (int64_t r = 0; r < hidden.size(0); r += batch)
    out.push_back(layer->forward(hidden.slice(0, r, std::min(r + batch, hidden.size(0))), rope));
  return torch::cat(out, 0);
}

double layerwise_loss(const model::WeightStore& store, const model::LlamaArch& arch,
                      const torch::Tensor& ids, const torch::Tensor& labels, int64_t batch) {
  torch::NoGradGuard no_grad;
  auto h = embed(store, ids);
  for (int64_t l = 0; l < arch.num_layers; ++l) {
    auto layer = load_layer(store, arch, l);
    h = run_layer(layer, arch, h, batch);
  }
  model::RMSNorm norm(arch.hidden_size, arch.rms_norm_eps, torch::kFloat32);
  norm->weight.copy_(store.load("model.norm.weight", torch::kFloat32));
  h = norm(h);
  const std::string head =
      arch.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  auto head_w = store.load(head, torch::kFloat32);
  double sum = 0;
  int64_t count = 0;
  for (int64_t r = 0; r < h.size(0); r += batch) {
    const int64_t e = std::min(r + batch, h.size(0));
    auto logits = torch::linear(h.slice(0, r, e), head_w);
    auto lab = labels.slice(0, r, e);
    sum += model::token_losses(logits, lab).sum().item<double>();
    count += lab.narrow(1, 1, lab.size(1) - 1).ne(-100).sum().item<int64_t>();
  }
  return count ? sum / count : 0.0;
}

}  // namespace spartan::prune
