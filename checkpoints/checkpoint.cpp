#include "checkpoints/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "adapters/adapter.h"
#include "checkpoints/h5.h"
#include "common/error.h"
#include "common/hash.h"
#include "model/weights.h"

namespace spartan::checkpoints {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void sync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Writes `text` to `path` through a temporary file, fsync'd, then renamed over it.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out)
      throw Error("cannot write " + fs::path(path).filename().string(), path,
                  "check the disk space of the run folder");
  }
  sync_path(tmp);
  fs::rename(tmp, path);
}

std::string cell_name(const parallel::Grid& g) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "shard-pp%02d-tp%02d", g.pp_rank(), g.tp_rank());
  return buf;
}

// Whether every rank succeeded; otherwise every rank throws (the failing one its own error).
void agree(parallel::Grid& grid, const std::string& error, const std::string& where) {
  auto failed = torch::tensor({error.empty() ? int64_t(0) : int64_t(1)});
  grid.world().all_reduce(failed);
  if (failed.item<int64_t>() == 0) return;
  if (!error.empty()) throw Error("saving the checkpoint failed: " + error, where,
                                  "free disk space; the previous checkpoint is intact");
  throw Error("another rank failed to save the checkpoint", where,
              "see that rank's error; the previous checkpoint is intact");
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

bool fault(const char* kind, int64_t step) {
  const char* env = std::getenv("SPARTAN_FAULT");
  return env && std::string(env) == std::string(kind) + "=" + std::to_string(step);
}

std::string save(parallel::Grid& grid, const SaveRequest& req) {
  const fs::path root = fs::path(req.run_dir) / "checkpoints";
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(req.step));
  const fs::path final_dir = root / name;
  const fs::path tmp = root / (std::string(name) + ".tmp");
  std::string error;
  if (grid.rank() == 0) try {
      fs::create_directories(root);
      fs::remove_all(tmp);
      fs::create_directories(tmp);
    } catch (const Error& e) {
      error = e.problem() + " (" + e.where() + ")";
    } catch (const std::exception& e) {
      error = e.what();
    }
  agree(grid, error, tmp.string());

  // Each cell's DP rank 0 writes its tensors; replicated ones only on TP rank 0.
  if (grid.dp_rank() == 0) try {
      const std::string cell = cell_name(grid);
      H5File file((tmp / (cell + ".h5")).string(), "w");
      json index = json::array();
      for (const auto& e : req.entries) {
        const bool sharded = e.placement.kind == model::TpPlacement::sharded;
        if (!sharded && grid.tp_rank() != 0) continue;
        auto t = e.local.detach().contiguous();
        const bool integer = t.scalar_type() == torch::kInt64;
        if (!integer) t = t.to(torch::kFloat32).contiguous();
        std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
        file.write("/" + e.key, shape, integer ? H5Type::i64 : H5Type::f32, t.data_ptr());
        std::vector<int64_t> global = shape;
        int64_t begin = 0, end = 0, dim = -1;
        if (sharded) {
          dim = e.placement.dim;
          global[dim] *= grid.layout().tp;
          begin = grid.tp_rank() * shape[dim];
          end = begin + shape[dim];
        }
        index.push_back({{"key", e.key}, {"dtype", integer ? "int64" : "float32"},
                         {"global_shape", global},
                         {"shard", {{"file", cell + ".h5"}, {"dim", dim}, {"begin", begin},
                                    {"end", end}}}});
      }
      file.close_and_sync();
      write_atomically((tmp / (cell + ".json")).string(), index.dump());
    } catch (const Error& e) {
      error = e.problem() + " (" + e.where() + ")";
    } catch (const std::exception& e) {
      error = e.what();
    }
  agree(grid, error, tmp.string());

  // Rank 0: the manifest last, then the rename and `latest`.
  if (grid.rank() == 0 && fault("kill-in-save", req.step)) std::raise(SIGKILL);
  if (grid.rank() == 0) try {
      json tensors = json::object();
      for (const auto& f : fs::directory_iterator(tmp)) {
        if (f.path().extension() != ".json") continue;
        std::ifstream in(f.path());
        for (const auto& e : json::parse(in)) {
          auto& t = tensors[e["key"].get<std::string>()];
          t["dtype"] = e["dtype"];
          t["global_shape"] = e["global_shape"];
          t["shards"].push_back(e["shard"]);
        }
        fs::remove(f.path());
      }
      json manifest = {{"format_version", kFormatVersion},
                       {"step", req.step},
                       {"topology",
                        {{"tp", grid.layout().tp}, {"pp", grid.layout().pp},
                         {"dp", grid.layout().dp}}},
                       {"identity", req.identity.is_null() ? json::object() : req.identity},
                       {"state", req.state},
                       {"tensors", tensors}};
      manifest["checksum"] = manifest_checksum(manifest);
      write_atomically((tmp / "manifest.json").string(), manifest.dump(1));
      sync_path(tmp.string());
      fs::remove_all(final_dir);
      fs::rename(tmp, final_dir);
      write_atomically((root / "latest").string(), std::string(name) + "\n");
      sync_path(root.string());
      std::vector<fs::path> steps;
      for (const auto& f : fs::directory_iterator(root)) {
        const std::string n = f.path().filename().string();
        if (n.rfind("step-", 0) == 0 && f.path().extension() != ".tmp") steps.push_back(f.path());
      }
      std::sort(steps.begin(), steps.end());
      for (size_t i = 0; i + req.keep < steps.size(); ++i) fs::remove_all(steps[i]);
    } catch (const Error& e) {
      error = e.problem() + " (" + e.where() + ")";
    } catch (const std::exception& e) {
      error = e.what();
    }
  agree(grid, error, final_dir.string());
  return final_dir.string();
}

std::string latest(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return "";
  std::string name;
  std::ifstream(root / "latest") >> name;
  if (!name.empty() && fs::is_regular_file(root / name / "manifest.json", ec))
    return (root / name).string();
  // `latest` is missing, empty or names no checkpoint: the newest step folder whose manifest
  // reads as a complete checkpoint. Step folders without one are never started over on.
  std::vector<fs::path> steps;
  for (const auto& f : fs::directory_iterator(root, ec)) {
    const std::string n = f.path().filename().string();
    if (n.rfind("step-", 0) == 0 && f.is_directory(ec) && f.path().extension() != ".tmp")
      steps.push_back(f.path());
  }
  std::sort(steps.rbegin(), steps.rend());
  std::string names;
  for (const auto& step : steps) {
    try {
      Checkpoint ck(step.string());
      return step.string();
    } catch (const Error&) {
      names += (names.empty() ? "" : ", ") + step.filename().string();
    }
  }
  if (!steps.empty())
    throw Error("checkpoints/latest names no checkpoint and no step folder holds a complete one (" +
                    names + ")",
                root.string(),
                "restore a checkpoint or `latest`, or move the folder away to start the run over");
  return "";
}

Checkpoint::Checkpoint(std::string folder)
    : folder_(std::move(folder)), manifest_(read_manifest(folder_)) {}

Checkpoint::~Checkpoint() = default;

H5File& Checkpoint::file(const std::string& name) const {
  auto& f = files_[name];
  if (!f) f = std::make_unique<H5File>(folder_ + "/" + name, "r");
  return *f;
}

bool Checkpoint::has(const std::string& key) const { return manifest_["tensors"].contains(key); }

torch::Tensor Checkpoint::global(const std::string& key) const {
  if (!has(key))
    throw Error("tensor '" + key + "' is not in the checkpoint", folder_ + "/manifest.json",
                "resume with the adapter configuration the checkpoint was saved with");
  const json& t = manifest_["tensors"][key];
  const auto damaged = [&](const std::string& what, const std::string& where) {
    return Error(what, where, "the checkpoint is damaged: resume from another one");
  };
  try {
    const auto shape = t.at("global_shape").get<std::vector<int64_t>>();
    for (int64_t n : shape)
      if (n < 0) throw damaged("tensor '" + key + "' has a negative size", folder_ + "/manifest.json");
    const std::string dtype = t.at("dtype").get<std::string>();
    if (dtype != "int64" && dtype != "float32")
      throw damaged("tensor '" + key + "' has dtype '" + dtype + "', not float32 or int64",
                    folder_ + "/manifest.json");
    const bool integer = dtype == "int64";
    auto out = torch::zeros(shape, integer ? torch::kInt64 : torch::kFloat32);
    for (const auto& s : t.at("shards")) {
      const H5File& f = file(s.at("file").get<std::string>());
      const std::string& path = f.path();
      const H5Dataset d = f.info("/" + key);
      // The file's own type decides how many bytes are read: it must be the manifest's.
      if (d.type != (integer ? H5Type::i64 : H5Type::f32))
        throw damaged("tensor '" + key + "' is stored with another type than the manifest's '" +
                          dtype + "'",
                      path);
      auto part = torch::empty(d.shape, out.options());
      f.read("/" + key, part.data_ptr());
      const int64_t dim = s.at("dim");
      if (dim < 0) {
        if (part.sizes() != out.sizes())
          throw Error("tensor '" + key + "' has another shape than the manifest says", path,
                      "the checkpoint is damaged: resume from another one");
        out.copy_(part);
      } else {
        const int64_t b = s.at("begin"), e = s.at("end");
        if (dim >= out.dim() || part.dim() != out.dim() || b < 0 || e - b != part.size(dim) ||
            e > out.size(dim))
          throw Error("the slice of '" + key + "' does not match the manifest", path,
                      "the checkpoint is damaged: resume from another one");
        out.narrow(dim, b, e - b).copy_(part);
      }
    }
    return out;
  } catch (const json::exception& e) {
    throw Error("the manifest's entry for '" + key + "' is malformed (" + e.what() + ")",
                folder_ + "/manifest.json", "the checkpoint is damaged: resume from another one");
  }
}

torch::Tensor Checkpoint::local(const std::string& key, const model::TpPlacement& placement,
                                const torch::Tensor& like, parallel::Grid& grid) const {
  auto g = global(key);
  if (placement.kind == model::TpPlacement::sharded) {
    const int64_t n = like.size(placement.dim);
    g = g.narrow(placement.dim, grid.tp_rank() * n, n);
  }
  if (g.sizes() != like.sizes()) {
    std::ostringstream msg;
    msg << "tensor '" << key << "' is " << g.sizes() << " in the checkpoint, this run needs "
        << like.sizes();
    throw UsageError(msg.str(), folder_, "resume with the configuration the run was saved with");
  }
  return g;
}

int64_t Checkpoint::verify() const {
  int64_t bytes = 0;
  for (const auto& [key, t] : manifest_["tensors"].items()) bytes += global(key).nbytes();
  return bytes;
}

void load_trained(const Checkpoint& ck, const AdapterConfig& adapter, model::Llama& model,
                  parallel::Grid* grid) {
  adapters::attach(model, adapter);
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters();
  for (const auto& [name, p] : adapters::trainable_parameters(model)) {
    const std::string key = "params/" + name;
    params[name].copy_(grid ? ck.local(key, model->placement(name), p, *grid) : ck.global(key));
  }
}

std::vector<Entry> mask_digests(model::Llama& model, parallel::Grid& grid,
                                const std::vector<model::Proj>& targets) {
  torch::NoGradGuard no_grad;
  std::vector<Entry> out;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (model::Proj p : targets) {
      const auto& proj = model->projection(l, p);
      const model::TpSlice& s = proj->slice();
      const auto& W = proj->weight;
      const int64_t col0 = s.split == model::TpSplit::input ? s.begin : 0;
      auto hashes = torch::empty({W.size(1)}, torch::kInt64);
      for (int64_t j = 0; j < W.size(1); ++j)
        hashes[j] = static_cast<int64_t>(splitmix64(static_cast<uint64_t>(col0 + j)));
      auto rows = (W.eq(0).to(torch::kInt64) * hashes).sum(1);  // wraps modulo 2^64
      auto digest = torch::zeros({proj->out_features()}, torch::kInt64);
      const int64_t row0 = s.split == model::TpSplit::output ? s.begin : 0;
      if (s.split == model::TpSplit::input) digest.copy_(rows);
      else if (s.split == model::TpSplit::output && grid.tp_rank() % s.holders == 0)
        digest.narrow(0, row0, W.size(0)).copy_(rows);
      else if (s.split == model::TpSplit::none) digest.copy_(rows);
      if (s.split != model::TpSplit::none) grid.tp().all_reduce(digest);
      out.push_back({"masks/" + model::projection_name(l, p) + ".weight", digest, {}});
    }
  return out;
}

std::string base_model_digest(const std::string& folder) {
  uint64_t h = kFnvOffset;
  std::ifstream in(folder + "/config.json", std::ios::binary);
  const std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  h = fnv1a(h, config.data(), config.size());
  model::WeightStore store(folder);
  for (const auto& name : store.names()) {
    const auto& info = store.info(name);
    h = fnv1a(h, name.data(), name.size());
    const int dtype = static_cast<int>(info.dtype);
    h = fnv1a(h, &dtype, sizeof dtype);
    h = fnv1a(h, info.shape.data(), info.shape.size() * sizeof(int64_t));
  }
  return hex64(h);
}

std::string base_values_digest(const std::string& folder) {
  constexpr uint64_t kWhole = 64 << 10, kEnds = 4096, kBlock = 256, kBlocks = 16;
  uint64_t h = kFnvOffset;
  model::WeightStore store(folder);
  for (const auto& name : store.names()) {
    const auto& info = store.info(name);
    const std::byte* p = store.file_of(name).data(info);
    const uint64_t n = info.nbytes();
    if (n <= kWhole) {
      h = fnv1a(h, p, n);
      continue;
    }
    h = fnv1a(h, p, kEnds);
    h = fnv1a(h, p + n - kEnds, kEnds);
    for (uint64_t i = 1; i <= kBlocks; ++i) h = fnv1a(h, p + i * (n - kBlock) / (kBlocks + 1), kBlock);
  }
  return hex64(h);
}

}  // namespace spartan::checkpoints
