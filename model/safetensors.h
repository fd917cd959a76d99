// Safetensors files: a memory-mapped, validated reader and an atomic writer. No torch here.
//
// Format: 8 bytes little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [m, n], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data section; offsets are relative to its start.
//
// The reader trusts nothing: the header length, the JSON, every dtype, shape and offset pair is
// checked against the file before a byte of tensor data is handed out, and a bad file is a
// spartan::Error naming the file and the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace spartan::model {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType d);  // "F32", ...
size_t dtype_size(DType d);       // bytes per element
bool parse_dtype(const std::string& name, DType* out);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// Largest header accepted; real headers of 70B shards are well under 1 MiB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

class SafetensorsFile {
 public:
  explicit SafetensorsFile(std::string path);  // maps and validates; throws spartan::Error
  // Validates `size` bytes already in memory (not copied: they must outlive this object);
  // `name` stands for the path in errors. The fuzz target's entry point.
  SafetensorsFile(std::string name, const void* bytes, size_t size);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& at(const std::string& name) const;  // throws when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // First byte of the tensor's data; pages are read from disk only when touched.
  const std::byte* data(const TensorInfo& t) const { return data_ + t.begin; }
  // Drops the tensor's mapped pages from this process's resident memory (they stay in the page
  // cache and are read again when touched): a reader that streams tensors keeps none of them.
  void release(const TensorInfo& t) const;

 private:
  void parse(const unsigned char* bytes, uint64_t size);  // header length, then the header
  void parse_header(const char* json, uint64_t n);
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const std::byte* data_ = nullptr;
  uint64_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: the bytes are read from `data` (nbytes = numel * dtype_size).
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
};

// Writes `path` atomically (temporary file, fsync, rename). Tensors are laid out in the given
// order; the header is padded with spaces to a multiple of 8 bytes so data stays aligned.
// With `produce`, tensor i's bytes come from produce(i) when the writer reaches it (valid until
// the next call), so a file can be written one tensor at a time; `data` is then unused.
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {},
                       const std::function<const void*(size_t)>& produce = nullptr);

}  // namespace spartan::model
