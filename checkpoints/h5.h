// A small, torch-free wrapper over serial HDF5 for checkpoint shards. Since format 3 a dataset
// is one contiguous, unfiltered extent, so HDF5 writes and reads it straight from and into the
// caller's memory; its CRC-32C lives in the manifest (checkpoints/checkpoint.cpp). Small
// tensors share one 1-D dataset per type, written and read by element range. Formats 1 and 2
// stored each tensor as one chunk with a Fletcher32 checksum, which read() still verifies.
#pragma once

#include <cstdint>
#include <map>
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
  // A 1-D dataset of `count` elements, filled by write_at().
  void create(const std::string& name, int64_t count, H5Type type);
  void write_at(const std::string& name, int64_t offset, int64_t count, H5Type type,
                const void* data);
  bool has(const std::string& name) const;
  H5Dataset info(const std::string& name) const;
  // Into `data`, which holds the whole dataset; a Fletcher32 mismatch is an Error.
  void read(const std::string& name, void* data) const;
  // Elements [offset, offset + count) of dataset `name` (row-major) of `type`, read straight
  // from the file into `data` a MiB at a time, the CRC-32C of the bytes computed as each piece
  // arrives (while it is in cache); returns that CRC. Datasets of formats 1 and 2 (chunked) are
  // read whole through HDF5, their Fletcher32 checked.
  uint32_t read_range(const std::string& name, int64_t offset, int64_t count, H5Type type,
                      void* data) const;
  // Flushes, closes and fsyncs the file (writing mode); the object is closed afterwards.
  void close_and_sync();

 private:
  // Where a contiguous dataset's elements lie in the file (byte address; -1: chunked).
  struct Extent {
    int64_t address = -1, count = 0;
    H5Type type = H5Type::f32;
  };
  const Extent& extent(const std::string& name) const;

  std::string path_;
  int64_t file_ = -1;  // hid_t
  bool writing_ = false;
  mutable int fd_ = -1;  // the same file for direct reads, opened on first use
  mutable std::map<std::string, Extent> extents_;
};

size_t h5_type_size(H5Type t);

}  // namespace spartan::checkpoints
