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
#include "checkpoints/shard_io.h"
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
ElementType type(bool integer) { return integer ? ElementType::i64 : ElementType::f32; }

// Format 4's "crc32c_blocks": the CRC-32C of each kCrcBlockBytes of `data`, as hex digits.
std::string block_crcs(const char* data, size_t size) {
  std::string out;
  out.reserve(8 * ((size + kCrcBlockBytes - 1) / kCrcBlockBytes));
  for (size_t at = 0; at < size; at += kCrcBlockBytes)
    out += hex32(crc32c(data + at, std::min<size_t>(kCrcBlockBytes, size - at)));
  return out;
}

// A box of a row-major tensor, [lo[d], hi[d]) along each dimension d, as the runs of contiguous
// bytes it is made of, in the order of the tensor (and of the box, which they fill row-major).
struct Run {
  int64_t src, dst, size;  // bytes: offset in the tensor, offset in the box, length
};

std::vector<Run> box_runs(const std::vector<int64_t>& shape, const std::vector<int64_t>& lo,
                          const std::vector<int64_t>& hi, int64_t element) {
  const auto n = static_cast<int64_t>(shape.size());
  std::vector<Run> runs;
  for (int64_t d = 0; d < n; ++d)
    if (hi[d] <= lo[d]) return runs;
  int64_t k = -1;  // the last dimension the box narrows: what follows it is contiguous
  for (int64_t d = 0; d < n; ++d)
    if (lo[d] != 0 || hi[d] != shape[d]) k = d;
  int64_t inner = element;
  for (int64_t d = k + 1; d < n; ++d) inner *= shape[d];
  if (k < 0) return {{0, 0, inner}};
  const int64_t size = (hi[k] - lo[k]) * inner;
  std::vector<int64_t> at(lo.begin(), lo.begin() + k);  // an odometer over the dimensions before k
  for (int64_t dst = 0;; dst += size) {
    int64_t src = 0;
    for (int64_t d = 0; d < k; ++d) src = src * shape[d] + at[d];
    runs.push_back({(src * shape[k] + lo[k]) * inner, dst, size});
    int64_t d = k - 1;
    for (; d >= 0 && ++at[d] == hi[d]; --d) at[d] = lo[d];
    if (d < 0) return runs;
  }
}

void copy_runs(const char* tensor, const std::vector<Run>& runs, char* box) {
  for (const Run& r : runs) std::memcpy(box + r.dst, tensor + r.src, r.size);
}

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
  auto file = create_shard(path);
  for (bool integer : {false, true})
    if (pack_count[integer] > 0)
      file->create(pack_name(integer), pack_count[integer], type(integer));
  json index = json::array();
  for (bool integer : {false, true})
    for (const auto& item : items) {
      if (item.integer != integer) continue;
      const Entry& e = *item.entry;
      const auto* bytes = static_cast<const char*>(item.t.data_ptr());
      const size_t n = item.t.nbytes();
      std::vector<int64_t> shape(item.t.sizes().begin(), item.t.sizes().end());
      if (item.packed) {
        if (n > 0)
          file->write_at(pack_name(integer), item.offset, item.t.numel(), type(integer), bytes);
      } else {
        file->write("/" + e.key, shape, type(integer), bytes);
      }
      std::vector<int64_t> global = shape;
      int64_t begin = 0, end = 0, dim = -1;
      if (e.placement.kind == model::TpPlacement::sharded) {
        dim = e.placement.dim;
        global[dim] *= grid.layout().tp;
        begin = grid.tp_rank() * shape[dim];
        end = begin + shape[dim];
      }
      json shard = {{"file", file_name}, {"dim", dim}, {"begin", begin}, {"end", end}};
      if (item.packed) {
        shard["offset"] = item.offset;
        shard["crc32c"] = hex32(crc32c(bytes, n));
      } else {
        shard["crc32c_blocks"] = block_crcs(bytes, n);
      }
      index.push_back({{"key", e.key},
                       {"dtype", dtype_name(integer)},
                       {"global_shape", global},
                       {"shard", shard}});
    }
  file->close_and_sync();
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

const ShardReader& Checkpoint::file(const std::string& name) const {
  auto& f = files_[name];
  if (!f) f = open_shard(folder_ + "/" + name);
  return *f;
}

bool Checkpoint::has(const std::string& key) const { return manifest_["tensors"].contains(key); }

torch::Tensor Checkpoint::global(const std::string& key) const { return range(key, -1, 0, 0); }

torch::Tensor Checkpoint::local(const std::string& key, const model::TpPlacement& placement,
                                const torch::Tensor& like, parallel::Grid& grid) const {
  const bool sharded = placement.kind == model::TpPlacement::sharded;
  const int64_t dim = sharded ? placement.dim : -1;
  const int64_t n = sharded ? like.size(dim) : 0;
  if (has(key)) {  // a missing key is range()'s error
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
  return range(key, dim, grid.tp_rank() * n, n);
}

torch::Tensor Checkpoint::range(const std::string& key, int64_t want_dim, int64_t want_begin,
                                int64_t want_size) const {
  if (!has(key))
    throw Error("tensor '" + key + "' is not in the checkpoint", folder_ + "/manifest.json",
                "resume with the adapter configuration the checkpoint was saved with");
  const json& t = manifest_["tensors"][key];
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
      // The box of the part that lands in `out` (in the part's coordinates), and where.
      std::vector<int64_t> lo(shape.size(), 0), hi = part_shape;
      auto dst = out;
      if (want_dim >= 0) {
        const int64_t p0 = want_dim == dim ? part_begin : 0;  // the part's start along want_dim
        const int64_t a = std::max(want_begin, p0);
        const int64_t b = std::min(want_begin + want_size, p0 + part_shape[want_dim]);
        if (a >= b) continue;  // another rank's slice
        lo[want_dim] = a - p0;
        hi[want_dim] = b - p0;
        dst = dst.narrow(want_dim, a - want_begin, b - a);
      }
      if (dim >= 0 && dim != want_dim) dst = dst.narrow(dim, part_begin, part_shape[dim]);
      if (dst.is_contiguous()) {
        read_box(key, s, integer, part_shape, lo, hi, dst.data_ptr());  // straight in
        continue;
      }
      auto box = torch::empty(dst.sizes(), out.options());
      read_box(key, s, integer, part_shape, lo, hi, box.data_ptr());
      dst.copy_(box);
    }
    return out;
  } catch (const json::exception& e) {
    throw Error("the manifest's entry for '" + key + "' is malformed (" + e.what() + ")",
                folder_ + "/manifest.json", "the checkpoint is damaged: resume from another one");
  }
}

void Checkpoint::read_box(const std::string& key, const json& shard, bool integer,
                          const std::vector<int64_t>& shape, const std::vector<int64_t>& lo,
                          const std::vector<int64_t>& hi, void* data) const {
  const ShardReader& f = file(shard.at("file").get<std::string>());
  const auto damaged = [&](const std::string& what) {
    return Error(what, f.path(), "the checkpoint is damaged: resume from another one");
  };
  const auto failed = [&] {
    return damaged("dataset /" + key + " fails its checksum or cannot be read");
  };
  const auto mistyped = [&](const std::string& dataset) {
    return "dataset " + dataset + " is stored with another type than the manifest's '" +
           dtype_name(integer) + "'";
  };
  const int64_t element = integer ? 8 : 4;
  int64_t bytes = element;
  for (int64_t n : shape) bytes *= n;
  const std::vector<Run> runs = box_runs(shape, lo, hi, element);
  if (runs.empty()) return;
  const bool whole = runs.size() == 1 && runs[0].size == bytes;
  auto* out = static_cast<char*>(data);
  std::vector<char> buffer;
  // The tensor whole, into `data` when the box is all of it, else into `buffer` and cut.
  const auto read_whole = [&](auto&& read) {
    if (!whole) buffer.resize(static_cast<size_t>(bytes));
    char* to = whole ? out : buffer.data();
    read(to);
    bytes_read_ += bytes;
    if (shard.contains("crc32c") &&
        hex32(crc32c(to, static_cast<size_t>(bytes))) != shard["crc32c"])
      throw failed();
    if (!whole) copy_runs(buffer.data(), runs, out);
  };

  if (shard.contains("offset")) {  // packed with the other small tensors of its type
    const std::string pack = pack_name(integer);
    if (f.info(pack).type != type(integer)) throw damaged(mistyped(pack));
    return read_whole(
        [&](char* to) { f.read_bytes(pack, shard["offset"].get<int64_t>() * element, bytes, to); });
  }
  const std::string name = "/" + key;
  const DatasetInfo info = f.info(name);
  if (info.shape != shape)
    throw damaged("tensor '" + key + "' has another shape than the manifest says");
  if (info.type != type(integer)) throw damaged(mistyped(name));
  if (!f.ranged(name))  // formats 1 and 2: one filtered chunk, read whole
    return read_whole([&](char* to) { f.read_all(name, to); });

  // The tensor's blocks in order (every one when `every`, else those the runs touch), each read
  // once: straight into place where one run holds it whole, else into `buffer` and the runs'
  // bytes copied out of it. `check` sees each block as it lands.
  const auto walk = [&](bool every, const auto& check) {
    size_t next = 0;  // the first run not behind the block
    for (int64_t block = every ? 0 : runs.front().src / kCrcBlockBytes;
         block * kCrcBlockBytes < bytes;) {
      const int64_t b0 = block * kCrcBlockBytes, b1 = std::min(bytes, b0 + kCrcBlockBytes);
      while (next < runs.size() && runs[next].src + runs[next].size <= b0) ++next;
      if (!every && next == runs.size()) return;
      if (!every && runs[next].src >= b1) {  // the next block the runs touch
        block = runs[next].src / kCrcBlockBytes;
        continue;
      }
      const Run* r = next < runs.size() ? &runs[next] : nullptr;
      const bool in_place = r && r->src <= b0 && r->src + r->size >= b1;
      if (!in_place) buffer.resize(static_cast<size_t>(kCrcBlockBytes));
      char* to = in_place ? out + r->dst + (b0 - r->src) : buffer.data();
      f.read_bytes(name, b0, b1 - b0, to);
      bytes_read_ += b1 - b0;
      check(block, to, b1 - b0);
      for (size_t i = next; !in_place && i < runs.size() && runs[i].src < b1; ++i) {
        const int64_t a = std::max(runs[i].src, b0);
        const int64_t b = std::min(runs[i].src + runs[i].size, b1);
        std::memcpy(out + runs[i].dst + (a - runs[i].src), to + (a - b0),
                    static_cast<size_t>(b - a));
      }
      ++block;
    }
  };
  if (shard.contains("crc32c_blocks")) {  // format 4: a CRC a block, only the blocks needed
    const std::string& crcs = shard["crc32c_blocks"].get_ref<const std::string&>();
    walk(false, [&](int64_t block, const char* p, int64_t size) {
      if (crcs.compare(8 * block, 8, hex32(crc32c(p, static_cast<size_t>(size)))) != 0)
        throw failed();
    });
    return;
  }
  // Format 3: one CRC over the tensor, so every block is read, the CRC computed while each is in
  // cache.
  uint32_t crc = 0;
  walk(true, [&](int64_t, const char* p, int64_t size) {
    crc = crc32c(p, static_cast<size_t>(size), crc);
  });
  if (hex32(crc) != shard.at("crc32c")) throw failed();
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
