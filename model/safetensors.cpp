#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace spartan::model {
namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

const DTypeEntry& entry(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e;
  throw Error("unknown dtype enum value", "safetensors", "report this as a bug");
}

[[noreturn]] void bad_file(const std::string& path, const std::string& what,
                           const std::string& tensor = "") {
  throw Error("invalid safetensors file: " + what,
              tensor.empty() ? path : path + ", tensor '" + tensor + "'",
              "re-export or re-download the file");
}

// a * b, or false on overflow of uint64.
bool mul_ok(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

}  // namespace

const char* dtype_name(DType d) { return entry(d).name; }
size_t dtype_size(DType d) { return entry(d).size; }
bool parse_dtype(const std::string& name, DType* out) {
  for (const auto& e : kDTypes)
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::move(path)) {
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw Error(std::string("cannot open safetensors file: ") + std::strerror(errno), path_,
                "check that the model folder is complete");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("cannot stat safetensors file", path_, "check the file system");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    parse(nullptr, size);  // refuses it
  }
  map_size_ = size;
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw Error(std::string("cannot map safetensors file: ") + std::strerror(errno), path_,
                "check available memory and address space");
  }
  try {
    parse(static_cast<const unsigned char*>(map_), size);
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::SafetensorsFile(std::string name, const void* bytes, size_t size)
    : path_(std::move(name)) {
  parse(static_cast<const unsigned char*>(bytes), size);
}

void SafetensorsFile::parse(const unsigned char* bytes, uint64_t size) {
  if (size < 8)
    bad_file(path_, "file of " + std::to_string(size) +
                        " bytes is shorter than the 8-byte header "
                        "length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian
  if (n > kMaxHeaderBytes)
    bad_file(path_, "header length " + std::to_string(n) + " exceeds the limit of " +
                        std::to_string(kMaxHeaderBytes) + " bytes");
  if (n > size - 8)
    bad_file(path_, "header length " + std::to_string(n) + " runs past the end of the " +
                        std::to_string(size) + "-byte file (truncated?)");
  data_ = reinterpret_cast<const std::byte*>(bytes + 8 + n);
  data_size_ = size - 8 - n;
  parse_header(reinterpret_cast<const char*>(bytes + 8), n);
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

void SafetensorsFile::release(const TensorInfo& t) const {
  if (!map_) return;  // bytes owned by the caller
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<uintptr_t>(data(t));
  const uintptr_t begin = (first + page - 1) / page * page;  // whole pages of this tensor only
  const uintptr_t end = (first + t.nbytes()) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void SafetensorsFile::parse_header(const char* text, uint64_t n) {
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + n);  // rejects invalid UTF-8 in strings
  } catch (const nlohmann::json::exception& e) {
    bad_file(path_, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) bad_file(path_, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) bad_file(path_, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          bad_file(path_, "__metadata__ value '" + m.key() +
                              "' is not "
                              "a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) bad_file(path_, "entry is not an object", name);
    TensorInfo t;
    t.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) bad_file(path_, "missing or non-string dtype", name);
    if (!parse_dtype(dt->get<std::string>(), &t.dtype))
      bad_file(path_, "unsupported dtype '" + dt->get<std::string>() + "'", name);
    auto shape = v.find("shape");
    if (shape == v.end() || !shape->is_array()) bad_file(path_, "missing shape array", name);
    uint64_t numel = 1;
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned())
        bad_file(path_, "shape entries must be non-negative integers", name);
      uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          !mul_ok(numel, dim, &numel))
        bad_file(path_, "shape overflows", name);
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      bad_file(path_, "data_offsets must be two non-negative integers", name);
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end) bad_file(path_, "data_offsets begin after they end", name);
    if (t.end > data_size_)
      bad_file(path_,
               "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                   ") run past the " + std::to_string(data_size_) + "-byte data section",
               name);
    uint64_t expect = 0;
    if (!mul_ok(numel, dtype_size(t.dtype), &expect) || expect != t.end - t.begin)
      bad_file(path_,
               "shape and dtype need " + std::to_string(expect) +
                   " bytes but data_offsets "
                   "span " +
                   std::to_string(t.end - t.begin),
               name);
    index_[name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // No two tensors may share bytes.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors_)
    if (t.nbytes() > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  const TensorInfo* furthest = nullptr;  // the tensor reaching furthest so far
  for (const TensorInfo* t : by_offset) {
    if (furthest && t->begin < furthest->end)
      bad_file(path_, "data overlaps that of tensor '" + furthest->name + "'", t->name);
    if (!furthest || t->end > furthest->end) furthest = t;
  }
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t)
    throw Error("tensor '" + name + "' not found", path_,
                "check that the file belongs to this model");
  return *t;
}

void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata,
                       const std::function<const void*(size_t)>& produce) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const auto& t : tensors) {
    uint64_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    header[t.name] = {
        {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    sizes.push_back(n);
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error(std::string("cannot create file: ") + std::strerror(errno), tmp,
                "check that the folder exists and is writable");
  auto write_all = [&](const void* p, uint64_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        throw Error(std::string("write failed: ") + std::strerror(err), tmp,
                    "check free disk space");
      }
      c += w;
      n -= static_cast<uint64_t>(w);
    }
  };
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  write_all(len, 8);
  write_all(text.data(), text.size());
  for (size_t i = 0; i < tensors.size(); ++i)
    write_all(produce ? produce(i) : tensors[i].data, sizes[i]);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error("cannot flush file", tmp, "check free disk space");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw Error(std::string("cannot rename into place: ") + std::strerror(errno), path,
                "check permissions of the folder");
  }
}

}  // namespace spartan::model
