#include "checkpoints/merge.h"

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "adapters/adapter.h"
#include "adapters/method.h"
#include "checkpoints/checkpoint.h"
#include "checkpoints/peft.h"
#include "common/config.h"
#include "common/error.h"
#include "common/files.h"
#include "common/memory_use.h"
#include "model/hf_config.h"
#include "model/llama.h"
#include "model/weights.h"

namespace spartan::checkpoints {
namespace {

// The (layer, projection) a base tensor name is the weight of, if it is one of `targets`.
bool target_of(const std::string& name, int64_t layers, const std::vector<model::Proj>& targets,
               int64_t* layer, model::Proj* proj) {
  if (name.compare(0, 13, "model.layers.") != 0) return false;
  const int64_t l = std::stoll(name.substr(13));
  if (l < 0 || l >= layers) return false;
  for (model::Proj p : targets)
    if (name == model::projection_name(l, p) + ".weight") {
      *layer = l;
      *proj = p;
      return true;
    }
  return false;
}

// The adapter of one projection with its trained tensors from the checkpoint.
std::shared_ptr<model::LinearAdapter> load_adapter(const Checkpoint& ck, const Config& c,
                                                   const model::LlamaArch& arch, int64_t l,
                                                   model::Proj p) {
  const auto [out, in] = model::projection_shape(arch, p);
  auto adapter = adapters::make_linear_adapter(c.adapter, p, out, in);
  torch::NoGradGuard no_grad;
  for (auto& np : adapter->named_parameters())
    np.value().copy_(ck.global("params/" + model::projection_name(l, p) + ".adapter." + np.key()));
  return adapter;
}

namespace fs = std::filesystem;

// A path made absolute with every symbolic link resolved, whether or not it exists.
fs::path real_path(const std::string& path) { return fs::weakly_canonical(fs::absolute(path)); }

// Whether `inner` is `outer` or lies below it.
bool within(const fs::path& outer, const fs::path& inner) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i)
    if (i == inner.end() || *o != *i) return false;
  return true;
}

// Refuses an output that would replace what the merge reads (the base model folder, the run,
// the tokenizer) or, without `force`, a folder that holds anything.
void check_output(const std::string& out,
                  const std::vector<std::pair<std::string, std::string>>& read, bool force) {
  const fs::path target = real_path(out);
  for (const auto& [what, path] : read)
    if (!path.empty() && within(target, real_path(path)))
      throw UsageError(std::string("the output folder ") +
                           (target == real_path(path) ? "is " : "contains ") + what + " (" + path +
                           ")",
                       out, "choose another --out: the merge would replace what it reads");
  std::error_code ec;
  if (fs::exists(target, ec) && !fs::is_directory(target, ec))
    throw UsageError("the output exists and is not a folder", out, "choose another --out");
  if (!force && fs::is_directory(target, ec) && !fs::is_empty(target, ec))
    throw UsageError("the output folder is not empty", out,
                     "choose a new folder, or pass --force to replace it whole");
}

// Puts the finished folder `staged` at `out`: a rename, after moving an existing `out` aside
// (removed once the new one is in place). A crash leaves either the old folder or the new one.
void publish(const std::string& staged, const std::string& out) {
  const std::string aside = staged + ".replaced";
  std::error_code ec;
  const bool replace = fs::exists(out, ec);
  if (replace) fs::rename(out, aside);
  fs::rename(staged, out);
  if (replace) fs::remove_all(aside, ec);
}

}  // namespace

namespace {

// The checkpoint folder of `step` in the run (the newest where step < 0).
std::string checkpoint_of(const std::string& run_dir, int64_t step) {
  if (step >= 0) {
    char name[32];
    std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
    return run_dir + "/checkpoints/" + name;
  }
  std::string folder = latest(run_dir);
  if (folder.empty())
    throw UsageError("the run has no checkpoint", run_dir + "/checkpoints",
                     "train with [checkpoint] settings first, or name another --run");
  return folder;
}

// A copy of `full` (an adapter of an out x in projection) that keeps output rows [begin, end):
// the adapter of a block of rows, as a column-parallel TP rank holds it.
std::shared_ptr<model::LinearAdapter> rows_of(const AdapterConfig& config, model::Proj p,
                                              int64_t out, int64_t in, model::LinearAdapter& full,
                                              int64_t begin, int64_t end) {
  auto block = adapters::make_linear_adapter(config, p, out, in);
  torch::NoGradGuard no_grad;
  auto source = full.named_parameters();
  for (auto& np : block->named_parameters()) np.value().copy_(source[np.key()]);
  model::TpSlice slice;
  slice.split = model::TpSplit::output;
  slice.begin = begin;
  slice.end = end;
  slice.full = out;
  block->shard(slice);
  block->eval();
  return block;
}

// One merged projection, computed in blocks of output rows: the base rows come from the mapped
// file a block at a time and the result is the one full-size tensor (the base's dtype). Fills
// the zero fractions, checks SPP's zeros, and with `check` measures each block against its
// adapter on random inputs (the largest difference goes to *diff).
torch::Tensor merge_projection(const model::WeightStore& store, const std::string& name,
                               torch::Dtype dtype, const AdapterConfig& config, model::Proj p,
                               model::LinearAdapter& full, int64_t block_bytes, bool check,
                               MergedTensor* m, double* diff) {
  torch::NoGradGuard no_grad;
  const auto& shape = store.info(name).shape;
  const int64_t rows = shape[0], cols = shape[1];
  const int64_t per_block = std::max<int64_t>(1, block_bytes / (cols * 4));
  auto merged = torch::empty({rows, cols}, dtype);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cols));
  const auto x = check ? torch::randn({1, 4, cols}, gen, torch::kFloat32) : torch::Tensor();
  int64_t zeros_before = 0, zeros_after = 0;
  for (int64_t r = 0; r < rows; r += per_block) {
    const int64_t end = std::min(rows, r + per_block);
    const auto base = store.load_rows(name, r, end, dtype);
    const auto block = rows_of(config, p, rows, cols, full, r, end);
    const auto w = block->merged_weight(base, config.merge == MergeForm::masked).to(dtype);
    merged.narrow(0, r, end - r).copy_(w);
    const auto base_zero = base.eq(0);
    zeros_before += base_zero.sum().item<int64_t>();
    zeros_after += w.eq(0).sum().item<int64_t>();
    // Every base zero stays; a kept weight may also become exactly zero (SPP's factor
    // 1 + s·R(W_α)·W_β at 0), which the zeros-after column shows.
    if (block->keeps_zero_pattern() && (base_zero & w.ne(0)).any().item<bool>())
      throw Error("the merged weight " + name + " lost zeros of the base", store.folder(),
                  "report this as a bug: the merge must keep the base's zero pattern");
    if (check) {
      const auto adapted = block->forward(x, base.to(torch::kFloat32));
      const auto folded = torch::linear(x, w.to(torch::kFloat32));
      *diff = std::max(*diff, (folded - adapted).abs().max().item<double>());
    }
  }
  m->name = name;
  m->zeros_before = static_cast<double>(zeros_before) / static_cast<double>(merged.numel());
  m->zeros_after = static_cast<double>(zeros_after) / static_cast<double>(merged.numel());
  return merged;
}

// The adapted model (the base with the checkpoint's trained tensors) against the merged folder on
// a bounded slice: the first layer on embedded tokens, then the last layer and the head on the
// adapted first layer's output. One stage of one model is loaded at a time (fp32), so the check
// holds a layer and the embedding or the head, never the model.
double stage_logit_diff(const Checkpoint& ck, const Config& c, const model::LlamaArch& arch,
                        const std::string& merged) {
  torch::NoGradGuard no_grad;
  const int64_t L = arch.num_layers, T = 16;
  const auto ids =
      torch::arange(0, 2 * T, torch::kInt64).mul(7919).remainder(arch.vocab_size).view({2, T});
  auto load = [&](const std::string& folder, bool adapted, int64_t layer, bool first) {
    model::Shard shard;
    shard.first_layer = layer;
    shard.end_layer = layer + 1;
    shard.embedding = first;
    shard.head = layer == L - 1;
    model::Llama m = model::load_llama(folder, torch::kFloat32, shard);
    if (adapted) load_trained(ck, c.adapter, m);
    m->eval();
    return m;
  };
  // Through layer 0 (and the head, for a one-layer model).
  auto run_first = [&](const std::string& folder, bool adapted) {
    model::Llama m = load(folder, adapted, 0, true);
    auto h = m->run_layers(m->embed(ids));
    return L == 1 ? m->head_logits(h, T) : h;
  };
  const auto first_adapted = run_first(c.model.path, true);
  double diff = (run_first(merged, false) - first_adapted).abs().max().item<double>();
  if (L == 1) return diff;
  auto run_last = [&](const std::string& folder, bool adapted) {
    model::Llama m = load(folder, adapted, L - 1, false);
    return m->head_logits(m->run_layers(first_adapted), T);
  };
  const auto last_adapted = run_last(c.model.path, true);
  return std::max(diff, (run_last(merged, false) - last_adapted).abs().max().item<double>());
}

}  // namespace

int64_t export_adapter(const std::string& run_dir, int64_t step, const std::string& final_out,
                       int64_t* total) {
  const Checkpoint ck(checkpoint_of(run_dir, step));
  const Config c = load_config(run_dir + "/config.resolved.toml");
  const adapters::Method& method = adapters::method(c.adapter.method);
  const adapters::Export form = method.exports();
  if (form != adapters::Export::peft_lora && form != adapters::Export::peft_ia3)
    throw Error(std::string("no PEFT export from a checkpoint for ") + method.title(), run_dir,
                "report this as a bug");
  const model::LlamaArch arch = model::read_hf_config(c.model.path);
  std::vector<PeftModule> modules;
  int64_t kept = 0, ranks = 0;
  for (int64_t l = 0; l < arch.num_layers; ++l)
    for (model::Proj p : method.targets(c.adapter)) {
      auto adapter = load_adapter(ck, c, arch, l, p);
      if (adapter->ranks_kept() >= 0) {
        kept += adapter->ranks_kept();
        ranks += adapter->ranks();
        adapter = adapter->compacted();  // zero-gated ranks dropped
      }
      modules.push_back({l, p, adapter});
    }
  if (total) *total = ranks;
  const std::string out =
      real_path(final_out).string() + ".spartan-partial-" + std::to_string(::getpid());
  fs::remove_all(out);
  try {
    if (form == adapters::Export::peft_ia3)
      write_peft_ia3(out, modules, c.model.path);
    else
      write_peft_lora(out, modules, c.adapter, c.model.path);
    publish(out, final_out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(out, ec);
    throw;
  }
  return kept;
}

MergeReport merge_run(const std::string& run_dir, int64_t step, const std::string& final_out,
                      const MergeOptions& options) {
  const bool check_logits = options.check_logits;
  MergeReport report;
  report.checkpoint = checkpoint_of(run_dir, step);
  Checkpoint ck(report.checkpoint);
  Config c = load_config(run_dir + "/config.resolved.toml");
  const adapters::Method& method = adapters::method(c.adapter.method);
  if (options.merge) {
    AdapterConfig masked = c.adapter;
    masked.merge = MergeForm::masked;
    if (!method.masked_merge(masked))
      throw UsageError(std::string(method.title()) + " has no dense or masked merge to choose",
                       "--merge " + name_of(*options.merge), "leave --merge out for this run");
    c.adapter.merge = *options.merge;
  }
  report.method = method.name();
  report.masked_merge = method.masked_merge(c.adapter);
  report.step = ck.manifest()["step"].get<int64_t>();
  report.out = final_out;
  if (!method.mergeable())
    throw UsageError(std::string(method.title()) +
                         (method.site() == adapters::Site::blocks ? " adds modules after the blocks"
                                                                  : " adds virtual tokens") +
                         " and cannot be merged into weights",
                     run_dir, "use the adapter that spartan train saved under adapter/");
  const auto& identity = ck.manifest()["identity"];
  const std::string saved_digest = identity.value("base model", "");
  const std::string saved_values = identity.value("base model values", "");
  if ((!saved_digest.empty() && saved_digest != base_model_digest(c.model.path)) ||
      (!saved_values.empty() && saved_values != base_values_digest(c.model.path)))
    throw UsageError("the base model folder is not the one the run trained on", c.model.path,
                     "restore the base model of the run (its config and tensors changed)");

  check_output(final_out,
               {{"the base model folder", c.model.path},
                {"the run", run_dir},
                {"the tokenizer", c.data.tokenizer}},
               options.force);
  const model::LlamaArch arch = model::read_hf_config(c.model.path);
  model::WeightStore store(c.model.path);
  const bool trained_base = method.site() == adapters::Site::base;
  // The compact adapter beside the merged model, where PEFT has the method.
  const bool writes_adapter = method.exports() == adapters::Export::peft_lora ||
                              method.exports() == adapters::Export::peft_ia3;
  const std::vector<model::Proj> targets = method.targets(c.adapter);
  // Everything is written into a fresh folder beside the output and renamed into place at the
  // end: a failed merge leaves nothing behind and an existing output (--force) untouched.
  const std::string out =
      real_path(final_out).string() + ".spartan-partial-" + std::to_string(::getpid());
  fs::remove_all(out);
  make_dirs(out);
  try {
    // Freed tensors go back to the kernel at once, so what the merge holds is what it uses.
    return_large_blocks_to_kernel();
    reset_peak_resident();
    report.start_resident_bytes = resident_bytes();

    // Output files as the base's, tensor for tensor: names, dtypes and shapes do not change.
    const std::map<std::string, std::string> meta = {{"format", "pt"}};
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", 0}};
    index["weight_map"] = nlohmann::ordered_json::object();
    uint64_t total = 0;
    const auto& files = store.files();
    std::vector<PeftModule> exported;  // the compact adapter, where PEFT has the method
    // Output files of at most max_shard_bytes, tensors in the base's order (HF's layout: one
    // model.safetensors, or model-0000k-of-0000n.safetensors with an index).
    std::vector<std::vector<model::TensorView>> groups(1);
    uint64_t in_group = 0;
    for (const auto& file : files)
      for (const auto& info : file->tensors()) {
        if (in_group > 0 && in_group + info.nbytes() > options.max_shard_bytes) {
          groups.emplace_back();
          in_group = 0;
        }
        groups.back().push_back({info.name, info.dtype, info.shape, nullptr});
        in_group += info.nbytes();
        total += info.nbytes();
        report.largest_tensor_bytes = std::max<int64_t>(
            report.largest_tensor_bytes,
            static_cast<int64_t>(info.nbytes() / model::dtype_size(info.dtype) * 4));
      }
    for (size_t f = 0; f < groups.size(); ++f) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", f + 1, groups.size());
      const std::string file = groups.size() == 1 ? "model.safetensors" : name;
      const auto& views = groups[f];
      for (const auto& v : views) index["weight_map"][v.name] = file;
      torch::Tensor current;                      // alive until the writer asks for the next tensor
      const model::TensorInfo* mapped = nullptr;  // a base tensor written from its mapping
      auto release_mapped = [&] {
        if (mapped) store.file_of(mapped->name).release(*mapped);
        mapped = nullptr;
      };
      model::write_safetensors(out + "/" + file, views, meta, [&](size_t i) -> const void* {
        const auto& v = views[i];
        const torch::Dtype dtype = model::to_torch(v.dtype);
        current = torch::Tensor();  // the previous tensor is written by now
        release_mapped();
        int64_t l = 0;
        model::Proj p{};
        if (trained_base) {
          current = ck.global("params/" + v.name).to(dtype).contiguous();
        } else if (target_of(v.name, arch.num_layers, targets, &l, &p)) {
          auto adapter = load_adapter(ck, c, arch, l, p);
          MergedTensor m;
          current =
              merge_projection(store, v.name, dtype, c.adapter, p, *adapter, options.block_bytes,
                               check_logits, &m, &report.max_projection_diff);
          store.file_of(v.name).release(store.info(v.name));
          if (adapter->ranks_kept() >= 0) {
            m.ranks_kept = adapter->ranks_kept();
            m.ranks = adapter->ranks();
            adapter = adapter->compacted();  // zero-gated ranks dropped
          }
          if (writes_adapter) exported.push_back({l, p, adapter});
          report.merged.push_back(m);
        } else {  // unchanged: written straight from the base's mapped file
          mapped = &store.info(v.name);
          return store.file_of(v.name).data(*mapped);
        }
        return current.data_ptr();
      });
      release_mapped();
    }
    report.peak_resident_bytes = peak_resident_bytes();
    report.memory_bound_bytes =
        merge_memory_bound(report.largest_tensor_bytes, options.block_bytes);
    index["metadata"]["total_size"] = total;
    if (groups.size() > 1) {
      std::ofstream idx(out + "/model.safetensors.index.json");
      idx << index.dump(2) << "\n";
      if (!idx)
        throw Error("cannot write model.safetensors.index.json", out, "check free disk space");
    }
    model::write_hf_config(out, arch);
    const std::string tok =
        !c.data.tokenizer.empty() ? c.data.tokenizer : c.model.path + "/tokenizer.model";
    if (file_exists(tok)) copy_file(tok, out + "/tokenizer.model");

    if (writes_adapter) {
      if (method.exports() == adapters::Export::peft_lora)
        write_peft_lora(out + "/adapter", exported, c.adapter, c.model.path);
      else
        write_peft_ia3(out + "/adapter", exported, c.model.path);
      report.adapter = final_out + "/adapter";
    }

    if (check_logits) {
      reset_peak_resident();
      report.max_logit_diff = stage_logit_diff(ck, c, arch, out);
      report.check_peak_resident_bytes = peak_resident_bytes();
    }
    publish(out, final_out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(out, ec);
    throw;
  }
  return report;
}

}  // namespace spartan::checkpoints
