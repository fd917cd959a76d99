#include "checkpoints/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "adapters/adapter.h"
#include "checkpoints/h5.h"
#include "common/crc32c.h"
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
  if (!error.empty())
    throw Error("saving the checkpoint failed: " + error, where,
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

// Tensors below this size share one dataset per type (per-dataset metadata would dominate).
constexpr int64_t kPackBelow = 1 << 20;

const char* dtype_name(bool integer) { return integer ? "int64" : "float32"; }
std::string pack_name(bool integer) { return std::string("/packed/") + dtype_name(integer); }

// One cell's shard file and its index (the manifest's entries for it): large tensors as their
// own datasets, written from the tensor's memory; the others packed into /packed/<dtype>; every
// tensor's CRC-32C in the index.
void write_cell(const parallel::Grid& grid, const std::vector<Entry>& entries,
                const std::string& path, const std::string& file_name,
                const std::string& index_path) {
  struct Item {
    const Entry* entry;
    torch::Tensor t;  // contiguous, fp32 or int64
    bool integer, packed;
    int64_t offset = -1;  // in the pack, elements
  };
  std::vector<Item> items;
  int64_t pack_count[2] = {0, 0};  // float32, int64
  for (const auto& e : entries) {
    const bool sharded = e.placement.kind == model::TpPlacement::sharded;
    if (!sharded && grid.tp_rank() != 0) continue;
    auto t = e.local.detach();
    const bool integer = t.scalar_type() == torch::kInt64;
    t = t.to(torch::kCPU, integer ? torch::kInt64 : torch::kFloat32).contiguous();
    Item item{&e, t, integer, static_cast<int64_t>(t.nbytes()) < kPackBelow};
    if (item.packed) {
      item.offset = pack_count[integer];
      pack_count[integer] += t.numel();
    }
    items.push_back(std::move(item));
  }
  H5File file(path, "w");
  for (bool integer : {false, true})
    if (pack_count[integer] > 0)
      file.create(pack_name(integer), pack_count[integer], integer ? H5Type::i64 : H5Type::f32);
  json index = json::array();
  for (bool integer : {false, true})
    for (const auto& item : items) {
      if (item.integer != integer) continue;
      const Entry& e = *item.entry;
      const auto* bytes = static_cast<const char*>(item.t.data_ptr());
      const size_t n = item.t.nbytes();
      const uint32_t crc = crc32c(bytes, n);
      std::vector<int64_t> shape(item.t.sizes().begin(), item.t.sizes().end());
      if (item.packed) {
        if (n > 0)
          file.write_at(pack_name(integer), item.offset, item.t.numel(),
                        integer ? H5Type::i64 : H5Type::f32, bytes);
      } else {
        file.write("/" + e.key, shape, integer ? H5Type::i64 : H5Type::f32, bytes);
      }
      std::vector<int64_t> global = shape;
      int64_t begin = 0, end = 0, dim = -1;
      if (e.placement.kind == model::TpPlacement::sharded) {
        dim = e.placement.dim;
        global[dim] *= grid.layout().tp;
        begin = grid.tp_rank() * shape[dim];
        end = begin + shape[dim];
      }
      json shard = {{"file", file_name},
                    {"dim", dim},
                    {"begin", begin},
                    {"end", end},
                    {"crc32c", hex32(crc)}};
      if (item.packed) shard["offset"] = item.offset;
      index.push_back({{"key", e.key},
                       {"dtype", dtype_name(integer)},
                       {"global_shape", global},
                       {"shard", shard}});
    }
  file.close_and_sync();
  write_atomically(index_path, index.dump());
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
      write_cell(grid, req.entries, (tmp / (cell + ".h5")).string(), cell + ".h5",
                 (tmp / (cell + ".json")).string());
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
      json manifest = {
          {"format_version", kFormatVersion},
          {"step", req.step},
          {"topology",
           {{"tp", grid.layout().tp}, {"pp", grid.layout().pp}, {"dp", grid.layout().dp}}},
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

torch::Tensor Checkpoint::global(const std::string& key) const { return read(key, -1, 0, 0); }

torch::Tensor Checkpoint::local(const std::string& key, const model::TpPlacement& placement,
                                const torch::Tensor& like, parallel::Grid& grid) const {
  const bool sharded = placement.kind == model::TpPlacement::sharded;
  const int64_t dim = sharded ? placement.dim : -1;
  const int64_t n = sharded ? like.size(dim) : 0;
  if (has(key)) {  // a missing key is read()'s error
    const auto global_shape =
        manifest_["tensors"][key].at("global_shape").get<std::vector<int64_t>>();
    bool fits = global_shape.size() == static_cast<size_t>(like.dim());
    for (int64_t d = 0; fits && d < like.dim(); ++d)
      fits =
          d == dim ? global_shape[d] >= (grid.tp_rank() + 1) * n : global_shape[d] == like.size(d);
    if (!fits) {
      std::ostringstream msg;
      msg << "tensor '" << key << "' is " << c10::IntArrayRef(global_shape)
          << " in the checkpoint, this run needs " << like.sizes()
          << (sharded ? " of it on each TP rank" : "");
      throw UsageError(msg.str(), folder_, "resume with the configuration the run was saved with");
    }
  }
  return read(key, dim, grid.tp_rank() * n, n);
}

torch::Tensor Checkpoint::read(const std::string& key, int64_t want_dim, int64_t want_begin,
                               int64_t want_size) const {
  if (!has(key))
    throw Error("tensor '" + key + "' is not in the checkpoint", folder_ + "/manifest.json",
                "resume with the adapter configuration the checkpoint was saved with");
  const json& t = manifest_["tensors"][key];
  const auto damaged = [&](const std::string& what, const std::string& where) {
    return Error(what, where, "the checkpoint is damaged: resume from another one");
  };
  try {
    // The manifest was validated when read (check_manifest): shapes, dtypes, tiling slices.
    const auto shape = t.at("global_shape").get<std::vector<int64_t>>();
    const bool integer = t.at("dtype").get<std::string>() == "int64";
    auto region = shape;  // what is returned: the whole tensor, or a range along want_dim
    if (want_dim >= 0) region[want_dim] = want_size;
    auto out = torch::empty(region, integer ? torch::kInt64 : torch::kFloat32);
    for (const auto& s : t.at("shards")) {
      const int64_t dim = s.at("dim");
      auto part_shape = shape;  // the shard's part of the whole tensor
      int64_t part_begin = 0;
      if (dim >= 0) {
        part_begin = s.at("begin");
        part_shape[dim] = s.at("end").get<int64_t>() - part_begin;
      }
      // The overlap of the shard with the region, along the shard's and the region's dimension.
      auto dst = out;
      int64_t lo = 0, hi = 0;
      if (dim >= 0) {
        const int64_t r0 = want_dim == dim ? want_begin : 0;
        const int64_t r1 = want_dim == dim ? want_begin + want_size : shape[dim];
        lo = std::max(r0, part_begin);
        hi = std::min(r1, part_begin + part_shape[dim]);
        if (lo >= hi) continue;  // another rank's slice
        dst = out.narrow(dim, lo - r0, hi - lo);
      }
      const bool whole_part = dim < 0 || (lo == part_begin && hi == part_begin + part_shape[dim]);
      const bool same_range = want_dim < 0 || want_dim == dim;
      if (whole_part && same_range && dst.is_contiguous()) {
        read_part(key, s, integer, part_shape, dst.data_ptr(), dst.nbytes());  // straight in
        continue;
      }
      auto part = torch::empty(part_shape, out.options());
      read_part(key, s, integer, part_shape, part.data_ptr(), part.nbytes());
      if (dim >= 0) part = part.narrow(dim, lo - part_begin, hi - lo);
      if (want_dim >= 0 && want_dim != dim) part = part.narrow(want_dim, want_begin, want_size);
      dst.copy_(part);
    }
    return out;
  } catch (const json::exception& e) {
    throw damaged("the manifest's entry for '" + key + "' is malformed (" + e.what() + ")",
                  folder_ + "/manifest.json");
  }
}

void Checkpoint::read_part(const std::string& key, const json& shard, bool integer,
                           const std::vector<int64_t>& shape, void* data, size_t bytes) const {
  const H5File& f = file(shard.at("file").get<std::string>());
  const std::string& path = f.path();
  const H5Type type = integer ? H5Type::i64 : H5Type::f32;
  const auto count = static_cast<int64_t>(bytes / h5_type_size(type));
  uint32_t crc = 0;
  if (shard.contains("offset")) {  // packed with the other small tensors of its type
    crc = f.read_range(pack_name(integer), shard.at("offset").get<int64_t>(), count, type, data);
  } else {
    // The file's own shape must be the manifest's (read_range checks the type).
    if (f.info("/" + key).shape != shape)
      throw Error("tensor '" + key + "' has another shape than the manifest says", path,
                  "the checkpoint is damaged: resume from another one");
    crc = f.read_range("/" + key, 0, count, type, data);
  }
  if (shard.contains("crc32c") && hex32(crc) != shard.at("crc32c"))
    throw Error("dataset /" + key + " fails its checksum or cannot be read", path,
                "the checkpoint is damaged: resume from another one");
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
      int64_t* h = hashes.data_ptr<int64_t>();
      for (int64_t j = 0; j < W.size(1); ++j)
        h[j] = static_cast<int64_t>(splitmix64(static_cast<uint64_t>(col0 + j)));
      hashes = hashes.to(W.device());
      // Row blocks of about 4M entries: the int64 products of a whole 70B shard would be
      // 16 bytes an entry at once.
      auto rows = torch::empty({W.size(0)}, torch::kInt64);
      const int64_t block =
          std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(1, W.size(1)));
      for (int64_t r = 0; r < W.size(0); r += block) {
        const int64_t n = std::min(block, W.size(0) - r);
        rows.narrow(0, r, n).copy_(
            (W.narrow(0, r, n).eq(0).to(torch::kInt64) * hashes).sum(1));  // wraps modulo 2^64
      }
      auto digest = torch::zeros({proj->out_features()}, torch::kInt64);
      const int64_t row0 = s.split == model::TpSplit::output ? s.begin : 0;
      if (s.split == model::TpSplit::input)
        digest.copy_(rows);
      else if (s.split == model::TpSplit::output && grid.tp_rank() % s.holders == 0)
        digest.narrow(0, row0, W.size(0)).copy_(rows);
      else if (s.split == model::TpSplit::none)
        digest.copy_(rows);
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
    for (uint64_t i = 1; i <= kBlocks; ++i)
      h = fnv1a(h, p + i * (n - kBlock) / (kBlocks + 1), kBlock);
  }
  return hex64(h);
}

}  // namespace spartan::checkpoints
