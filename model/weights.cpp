#include "model/weights.h"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"

namespace spartan::model {
namespace {

void check_range(const std::string& name, const TensorInfo& t, size_t dim, int64_t begin,
                 int64_t end, const std::string& path) {
  if (t.shape.size() <= dim)
    throw Error("tensor '" + name + "' has " + std::to_string(t.shape.size()) +
                    " dims, cannot slice dim " + std::to_string(dim),
                path, "slice a tensor that has that dimension");
  if (begin < 0 || end < begin || end > t.shape[dim])
    throw Error("slice [" + std::to_string(begin) + ", " + std::to_string(end) + ") of dim " +
                    std::to_string(dim) + " is outside tensor '" + name + "' of size " +
                    std::to_string(t.shape[dim]),
                path, "check the parallel layout against the model's shape");
}

}  // namespace

torch::Dtype to_torch(DType d) {
  switch (d) {
    case DType::F64:
      return torch::kFloat64;
    case DType::F32:
      return torch::kFloat32;
    case DType::F16:
      return torch::kFloat16;
    case DType::BF16:
      return torch::kBFloat16;
    case DType::I64:
      return torch::kInt64;
    case DType::I32:
      return torch::kInt32;
    case DType::I16:
      return torch::kInt16;
    case DType::I8:
      return torch::kInt8;
    case DType::U8:
      return torch::kUInt8;
    case DType::BOOL:
      return torch::kBool;
  }
  throw Error("unknown dtype", "weights", "report this as a bug");
}

DType from_torch(torch::Dtype d) {
  for (DType x : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::BOOL})
    if (to_torch(x) == d) return x;
  throw Error(std::string("dtype ") + c10::toString(d) + " cannot be stored in safetensors",
              "weights", "convert the tensor first");
}

WeightStore::WeightStore(const std::string& folder) : folder_(folder) {
  const std::string index = folder + "/model.safetensors.index.json";
  const std::string single = folder + "/model.safetensors";
  if (file_exists(index)) {
    nlohmann::json j;
    try {
      std::ifstream in(index);
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("index is not valid JSON (") + e.what() + ")", index,
                  "re-export the model folder");
    }
    auto map = j.find("weight_map");
    if (map == j.end() || !map->is_object())
      throw Error("index has no weight_map object", index, "re-export the model folder");
    std::map<std::string, const SafetensorsFile*> by_file;
    for (auto it = map->begin(); it != map->end(); ++it) {
      if (!it.value().is_string())
        throw Error("weight_map entry '" + it.key() + "' is not a file name", index,
                    "re-export the model folder");
      const std::string file = it.value().get<std::string>();
      if (file.find('/') != std::string::npos)
        throw Error("weight_map entry '" + it.key() + "' points outside the folder", index,
                    "re-export the model folder");
      auto f = by_file.find(file);
      if (f == by_file.end()) {
        files_.push_back(std::make_unique<SafetensorsFile>(folder + "/" + file));
        f = by_file.emplace(file, files_.back().get()).first;
      }
      if (!f->second->find(it.key()))
        throw Error("tensor '" + it.key() + "' is listed in the index but not in " + file, index,
                    "re-export the model folder");
      where_[it.key()] = f->second;
    }
  } else if (file_exists(single)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& t : files_.back()->tensors()) where_[t.name] = files_.back().get();
  } else {
    throw Error("no model.safetensors or model.safetensors.index.json", folder,
                "pass a Hugging Face model folder saved with safetensors");
  }
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

bool WeightStore::has(const std::string& name) const { return where_.count(name) != 0; }

const SafetensorsFile& WeightStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    throw Error("tensor '" + name + "' not found", folder_,
                "check that the folder holds the model the config expects");
  return *it->second;
}

const TensorInfo& WeightStore::info(const std::string& name) const {
  return file_of(name).at(name);
}

namespace {

// A stored integer or boolean read into a floating-point weight is a mislabelled file (an F32
// tensor relabelled I32 has the same size and would load as garbage): refused.
void check_float_source(const TensorInfo& t, torch::Dtype dtype, const std::string& path) {
  if (!c10::isFloatingType(dtype)) return;
  if (t.dtype == DType::F64 || t.dtype == DType::F32 || t.dtype == DType::F16 ||
      t.dtype == DType::BF16)
    return;
  throw Error(std::string("tensor '") + t.name + "' is stored as " + dtype_name(t.dtype) +
                  ", but a weight must be F32, F16, BF16 or F64",
              path, "re-export the model folder");
}

}  // namespace

torch::Tensor read_tensor(const SafetensorsFile& file, const std::string& name,
                          torch::Dtype dtype) {
  const TensorInfo& t = file.at(name);
  check_float_source(t, dtype, file.path());
  auto raw = torch::from_blob(const_cast<std::byte*>(file.data(t)), t.shape, to_torch(t.dtype));
  return raw.to(dtype, /*non_blocking=*/false, /*copy=*/true);
}

torch::Tensor WeightStore::load(const std::string& name, torch::Dtype dtype) const {
  return read_tensor(file_of(name), name, dtype);
}

torch::Tensor WeightStore::load_rows(const std::string& name, int64_t begin, int64_t end,
                                     torch::Dtype dtype) const {
  const SafetensorsFile& f = file_of(name);
  const TensorInfo& t = f.at(name);
  check_range(name, t, 0, begin, end, f.path());
  check_float_source(t, dtype, f.path());
  std::vector<int64_t> shape = t.shape;
  shape[0] = end - begin;
  int64_t row_elems = 1;
  for (size_t i = 1; i < t.shape.size(); ++i) row_elems *= t.shape[i];
  const std::byte* p = f.data(t) + begin * row_elems * dtype_size(t.dtype);
  auto view = torch::from_blob(const_cast<std::byte*>(p), shape, to_torch(t.dtype));
  return view.to(dtype, /*non_blocking=*/false, /*copy=*/true);
}

torch::Tensor WeightStore::load_cols(const std::string& name, int64_t begin, int64_t end,
                                     torch::Dtype dtype) const {
  const SafetensorsFile& f = file_of(name);
  const TensorInfo& t = f.at(name);
  if (t.shape.size() != 2)
    throw Error(
        "column slice of tensor '" + name + "' with " + std::to_string(t.shape.size()) + " dims",
        f.path(), "column slices need a 2-D tensor");
  check_range(name, t, 1, begin, end, f.path());
  check_float_source(t, dtype, f.path());
  const int64_t cols = t.shape[1];
  const std::byte* p = f.data(t) + begin * dtype_size(t.dtype);
  auto view = torch::from_blob(const_cast<std::byte*>(p), {t.shape[0], end - begin}, {cols, 1},
                               to_torch(t.dtype));
  return view.to(dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;  // contiguous CPU copies stay alive while writing
  std::vector<TensorView> views;
  for (const auto& [name, tensor] : tensors) {
    keep.push_back(tensor.detach().to(torch::kCPU).contiguous());
    const auto& k = keep.back();
    views.push_back({name, from_torch(k.scalar_type()),
                     std::vector<int64_t>(k.sizes().begin(), k.sizes().end()), k.data_ptr()});
  }
  write_safetensors(path, views, metadata);
}

void save_weights(const std::string& folder, const NamedTensors& tensors,
                  uint64_t max_shard_bytes) {
  std::vector<NamedTensors> shards(1);
  uint64_t current = 0, total = 0;
  for (const auto& nt : tensors) {
    const uint64_t n = nt.second.numel() * nt.second.element_size();
    if (current > 0 && current + n > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(nt);
    current += n;
    total += n;
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (shards.size() == 1) {
    save_safetensors(folder + "/model.safetensors", shards[0], meta);
    std::remove((folder + "/model.safetensors.index.json").c_str());
    return;
  }
  std::remove((folder + "/model.safetensors").c_str());
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = nlohmann::ordered_json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    save_safetensors(folder + "/" + file, shards[i], meta);
    for (const auto& nt : shards[i]) index["weight_map"][nt.first] = file;
  }
  std::ofstream out(folder + "/model.safetensors.index.json");
  out << index.dump(2) << "\n";
  if (!out)
    throw Error("cannot write index", folder + "/model.safetensors.index.json",
                "check free disk space");
}

}  // namespace spartan::model
