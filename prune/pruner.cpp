#include "prune/pruner.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include "common/error.h"
#include "common/files.h"
#include "model/hf_config.h"
#include "model/weights.h"
#include "prune/layerwise.h"

namespace spartan::prune {
namespace {

// Statistics of one projection input over the calibration tokens.
struct InputStats {
  torch::Tensor sq_sum;  // (in,) Σ x_j²          (Wanda)
  torch::Tensor H;       // (in, in) Σ x xᵀ       (SparseGPT)
  int64_t tokens = 0;
};

// Passes the projection through unchanged and records its input. Projections that share an
// input (q, k, v; gate, up) share one InputStats, filled by the first of them only.
class Recorder : public model::LinearAdapter {
 public:
  Recorder(std::shared_ptr<InputStats> stats, bool owner, bool hessian)
      : stats_(std::move(stats)), owner_(owner), hessian_(hessian) {}
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& weight) override {
    if (owner_) {
      auto x2 = x.reshape({-1, x.size(-1)}).to(torch::kFloat32);
      if (!stats_->sq_sum.defined()) {
        stats_->sq_sum = torch::zeros({x2.size(1)});
        if (hessian_) stats_->H = torch::zeros({x2.size(1), x2.size(1)});
      }
      stats_->sq_sum.add_(x2.pow(2).sum(0));
      if (hessian_) stats_->H.addmm_(x2.t(), x2);
      stats_->tokens += x2.size(0);
    }
    return torch::linear(x, weight);
  }

 private:
  std::shared_ptr<InputStats> stats_;
  bool owner_, hessian_;
};

const char* input_group(model::Proj p) {
  switch (p) {
    case model::Proj::q:
    case model::Proj::k:
    case model::Proj::v:
      return "attention input";
    case model::Proj::o:
      return "attention output";
    case model::Proj::gate:
    case model::Proj::up:
      return "mlp input";
    case model::Proj::down:
      return "mlp activation";
  }
  return "";
}

std::string basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

namespace {

// Activations from one rank to the next: (N, T, H) with its dtype, sent as a header + data.
void send_activations(parallel::Communicator& c, const torch::Tensor& h, int dst) {
  c.send(torch::tensor({h.size(0), h.size(1), h.size(2), static_cast<int64_t>(h.scalar_type())}),
         dst);
  c.send(h.contiguous(), dst);
}

torch::Tensor recv_activations(parallel::Communicator& c, int src) {
  auto header = torch::empty({4}, torch::kInt64);
  c.recv(header, src);
  const int64_t* d = header.data_ptr<int64_t>();
  auto h = torch::empty({d[0], d[1], d[2]}, static_cast<torch::ScalarType>(d[3]));
  c.recv(h, src);
  return h;
}

// A string from every rank onto rank 0 (in rank order); empty elsewhere.
std::vector<std::string> gather_strings(parallel::Communicator& c, const std::string& mine) {
  if (c.rank() != 0) {
    c.send(torch::tensor({static_cast<int64_t>(mine.size())}), 0);
    c.send(torch::from_blob(const_cast<char*>(mine.data()), {static_cast<int64_t>(mine.size())},
                            torch::kUInt8),
           0);
    return {};
  }
  std::vector<std::string> all{mine};
  for (int r = 1; r < c.size(); ++r) {
    auto n = torch::empty({1}, torch::kInt64);
    c.recv(n, r);
    auto bytes = torch::empty({n.item<int64_t>()}, torch::kUInt8);
    c.recv(bytes, r);
    all.emplace_back(reinterpret_cast<const char*>(bytes.data_ptr()), bytes.numel());
  }
  return all;
}

}  // namespace

PruneReport prune_folder(const std::string& in_folder, const std::string& out_folder,
                         const PruneOptions& o, const torch::Tensor& calib_ids,
                         const torch::Tensor& eval_ids, const torch::Tensor& eval_labels,
                         parallel::Communicator* ranks) {
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  if (in_folder == out_folder)
    throw UsageError("the output folder is the input folder", out_folder,
                     "write the pruned model to a new folder ([prune] out)");
  const model::LlamaArch arch = model::read_hf_config(in_folder);
  model::WeightStore store(in_folder);
  const std::string tmp = out_folder + "/.prune-layers";
  const int rank = ranks ? ranks->rank() : 0, size = ranks ? ranks->size() : 1;
  if (rank == 0) make_dirs(tmp);
  if (ranks) ranks->barrier();
  // This rank's layers [first, end): an even split, the remainder on the first ranks.
  const int64_t per = arch.num_layers / size, extra = arch.num_layers % size;
  const int64_t first = rank * per + std::min<int64_t>(rank, extra);
  const int64_t end = first + per + (rank < extra ? 1 : 0);

  PruneReport report;
  report.options = o;
  report.calibration_sequences = calib_ids.size(0);
  report.calibration_tokens = calib_ids.numel();
  // Evaluated where some held-out position takes a loss (a label other than HF's ignore index
  // -100 after the shift by one): none without held-out data or with prompts alone.
  const bool evaluate =
      eval_labels.defined() && eval_labels.dim() == 2 && eval_labels.size(0) > 0 &&
      eval_labels.size(1) > 1 &&
      eval_labels.narrow(1, 1, eval_labels.size(1) - 1).ne(-100).any().item<bool>();
  if (evaluate && rank == 0)
    report.loss_before = layerwise_loss(store, arch, eval_ids, eval_labels, o.batch);

  const bool needs_stats = o.method != PruneMethod::magnitude;
  const bool hessian = o.method == PruneMethod::sparsegpt;
  // (N, T, H): the embeddings on rank 0, what the previous rank's layers made elsewhere.
  // Magnitude pruning looks at the weights alone: no calibration pass.
  torch::Tensor h;
  if (needs_stats) h = rank == 0 ? embed(store, calib_ids) : recv_activations(*ranks, rank - 1);
  int64_t zeros = 0, total = 0;
  std::vector<std::string> layer_files;
  for (int64_t l = first; l < end; ++l) {
    auto layer = load_layer(store, arch, l);
    std::map<std::string, std::shared_ptr<InputStats>> stats;
    if (needs_stats) {
      for (model::Proj p : o.targets) {
        auto& s = stats[input_group(p)];
        const bool owner = !s;
        if (owner) s = std::make_shared<InputStats>();
        layer->projection(p)->attach(std::make_shared<Recorder>(s, owner, hessian));
      }
      run_layer(layer, arch, h, o.batch);
      for (model::Proj p : o.targets) layer->projection(p)->detach();
    }
    model::NamedTensors pruned;
    std::vector<torch::Tensor> keep;
    for (model::Proj p : o.targets) {
      torch::Tensor& W = layer->projection(p)->weight;
      const std::string name = model::projection_name(l, p) + ".weight";
      switch (o.method) {
        case PruneMethod::magnitude:
          W.masked_fill_(magnitude_mask(W, o.sparsity, o.pattern), 0.0);
          break;
        case PruneMethod::wanda:
          W.masked_fill_(wanda_mask(W, stats[input_group(p)]->sq_sum, o.sparsity, o.pattern), 0.0);
          break;
        case PruneMethod::sparsegpt:
          sparsegpt_prune(W, stats[input_group(p)]->H, o.sparsity, o.pattern, o.blocksize,
                          o.percdamp);
          break;
      }
      MaskCheck check = check_pattern(W, o.pattern);
      report.tensors.push_back({name, check.sparsity, check.pattern_ok});
      zeros += W.eq(0).sum().item<int64_t>();
      total += W.numel();
      pruned.emplace_back(name, W.to(model::to_torch(store.info(name).dtype)));
    }
    if (needs_stats) h = run_layer(layer, arch, h, o.batch);  // pruned outputs feed the next
    const std::string file = tmp + "/layer-" + std::to_string(l) + ".safetensors";
    model::save_safetensors(file, pruned);
    layer_files.push_back(file);
    std::printf("layer %lld/%lld pruned\n", static_cast<long long>(l + 1),
                static_cast<long long>(arch.num_layers));
    std::fflush(stdout);
  }
  if (needs_stats && rank + 1 < size) send_activations(*ranks, h, rank + 1);
  if (ranks) {
    // Every rank's results onto rank 0, which writes the folder from every rank's layer files.
    nlohmann::json mine = {
        {"zeros", zeros}, {"total", total}, {"tensors", nlohmann::json::array()}};
    for (const auto& t : report.tensors)
      mine["tensors"].push_back({t.name, t.sparsity, t.pattern_ok});
    const auto all = gather_strings(*ranks, mine.dump());
    if (rank != 0) {
      ranks->barrier();  // until rank 0 has read the layer files
      return report;
    }
    report.tensors.clear();
    zeros = total = 0;
    for (const auto& text : all) {
      const auto j = nlohmann::json::parse(text);
      zeros += j["zeros"].get<int64_t>();
      total += j["total"].get<int64_t>();
      for (const auto& t : j["tensors"])
        report.tensors.push_back({t[0].get<std::string>(), t[1].get<double>(), t[2].get<bool>()});
    }
    layer_files.clear();
    for (int64_t l = 0; l < arch.num_layers; ++l)
      layer_files.push_back(tmp + "/layer-" + std::to_string(l) + ".safetensors");
  }
  report.target_sparsity = total ? static_cast<double>(zeros) / total : 0.0;

  // The output folder: the input's files with the pruned tensors in place.
  std::vector<std::unique_ptr<model::SafetensorsFile>> layers;
  std::map<std::string, const model::SafetensorsFile*> pruned_in;
  for (const auto& f : layer_files) {
    layers.push_back(std::make_unique<model::SafetensorsFile>(f));
    for (const auto& t : layers.back()->tensors()) pruned_in[t.name] = layers.back().get();
  }
  for (const auto& file : store.files()) {
    std::vector<model::TensorView> views;
    for (const auto& t : file->tensors()) {
      auto it = pruned_in.find(t.name);
      const model::SafetensorsFile& src = it == pruned_in.end() ? *file : *it->second;
      const model::TensorInfo& info = src.at(t.name);
      views.push_back({t.name, info.dtype, info.shape, src.data(info)});
    }
    model::write_safetensors(out_folder + "/" + basename(file->path()), views, file->metadata());
  }
  for (const char* side :
       {"config.json", "model.safetensors.index.json", "generation_config.json", "tokenizer.model",
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    if (file_exists(in_folder + "/" + side))
      copy_file(in_folder + "/" + side, out_folder + "/" + side);
  layers.clear();
  for (const auto& f : layer_files) std::remove(f.c_str());
  ::rmdir(tmp.c_str());
  if (ranks) ranks->barrier();

  if (evaluate) {
    model::WeightStore out(out_folder);
    report.loss_after = layerwise_loss(out, arch, eval_ids, eval_labels, o.batch);
    report.evaluated = true;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

nlohmann::json PruneReport::to_json() const {
  nlohmann::json j;
  j["method"] = name_of(options.method);
  j["pattern"] = options.pattern.str();
  j["sparsity_requested"] =
      options.pattern.nm() ? 1.0 - double(options.pattern.n) / options.pattern.m : options.sparsity;
  j["sparsity_of_targets"] = target_sparsity;
  j["calibration"] = {{"sequences", calibration_sequences}, {"tokens", calibration_tokens}};
  if (options.method == PruneMethod::sparsegpt)
    j["sparsegpt"] = {{"blocksize", options.blocksize}, {"percdamp", options.percdamp}};
  for (const auto& t : tensors)
    j["tensors"][t.name] = {{"sparsity", t.sparsity}, {"pattern_ok", t.pattern_ok}};
  if (evaluated)
    j["held_out"] = {{"loss_before", loss_before},
                     {"perplexity_before", std::exp(loss_before)},
                     {"loss_after", loss_after},
                     {"perplexity_after", std::exp(loss_after)}};
  j["seconds"] = seconds;
  return j;
}

std::string PruneReport::table() const {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-44s %9s  %s\n", "tensor", "sparsity", "pattern");
  out += line;
  bool all_ok = true;
  for (const auto& t : tensors) {
    std::snprintf(line, sizeof line, "%-44s %9.4f  %s\n", t.name.c_str(), t.sparsity,
                  !options.pattern.nm() ? "-"
                  : t.pattern_ok        ? options.pattern.str().c_str()
                                        : "VIOLATED");
    out += line;
    all_ok = all_ok && t.pattern_ok;
  }
  std::snprintf(line, sizeof line, "\n%s %s: %.4f of the targeted weights are zero%s\n",
                name_of(options.method).c_str(), options.pattern.str().c_str(), target_sparsity,
                options.pattern.nm()
                    ? (all_ok ? ", every group obeys the pattern" : ", PATTERN VIOLATED")
                    : "");
  out += line;
  if (evaluated) {
    std::snprintf(line, sizeof line,
                  "held-out perplexity %.2f before, %.2f after (loss %.4f -> %.4f)\n",
                  std::exp(loss_before), std::exp(loss_after), loss_before, loss_after);
    out += line;
  } else {
    out +=
        "not evaluated: no held-out tokens (raise data.held_out_fraction to measure the pruned "
        "model's perplexity)\n";
  }
  return out;
}

}  // namespace spartan::prune
