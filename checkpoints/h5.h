// A small, torch-free wrapper over serial HDF5 for checkpoint shards: whole datasets written
// and read by path ("/params/model.layers.0.self_attn.q_proj.adapter.lora_A"), each one chunk
// with a Fletcher32 checksum, so a damaged byte is an error that names the file and dataset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spartan::checkpoints {

enum class H5Type { f32, f64, i64, u16, u8 };

struct H5Dataset {
  std::vector<int64_t> shape;
  H5Type type = H5Type::f32;
};

class H5File {
 public:
  // mode: "w" creates (truncating), "r" reads. Errors name the path.
  H5File(const std::string& path, const char* mode);
  ~H5File();
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  const std::string& path() const { return path_; }
  void write(const std::string& name, const std::vector<int64_t>& shape, H5Type type,
             const void* data);
  bool has(const std::string& name) const;
  H5Dataset info(const std::string& name) const;
  // Into `data`, which holds the whole dataset; a checksum mismatch is an Error.
  void read(const std::string& name, void* data) const;
  // Flushes, closes and fsyncs the file (writing mode); the object is closed afterwards.
  void close_and_sync();

 private:
  std::string path_;
  int64_t file_ = -1;  // hid_t
  bool writing_ = false;
};

size_t h5_type_size(H5Type t);

}  // namespace spartan::checkpoints
