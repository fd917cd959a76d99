// The HDF5 backend of shard_io.h, over serial HDF5. Since format 3 a dataset is one contiguous,
// unfiltered extent: HDF5 writes it straight from the caller's memory, and it is read by byte
// range with pread at the file address HDF5 gives (no HDF5 call, no copy). Formats 1 and 2
// stored each tensor as one chunk with a Fletcher32 checksum, which read_all() still verifies
// through HDF5.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checkpoints/shard_io.h"

namespace spartan::checkpoints {

class H5File : public ShardWriter, public ShardReader {
 public:
  // mode: "w" creates (truncating), "r" reads. Errors name the path.
  H5File(const std::string& path, const char* mode);
  ~H5File() override;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  // ShardWriter
  void write(const std::string& name, const std::vector<int64_t>& shape, ElementType type,
             const void* data) override;
  void create(const std::string& name, int64_t count, ElementType type) override;
  void write_at(const std::string& name, int64_t offset, int64_t count, ElementType type,
                const void* data) override;
  void close_and_sync() override;

  // ShardReader
  const std::string& path() const override { return path_; }
  bool has(const std::string& name) const override;
  DatasetInfo info(const std::string& name) const override;
  bool ranged(const std::string& name) const override;
  void read_bytes(const std::string& name, int64_t offset, int64_t size, void* data) const override;
  void read_all(const std::string& name, void* data) const override;

 private:
  // A dataset's shape, type and, where it is contiguous, its bytes' address in the file (-1:
  // chunked). Looked up once per dataset.
  struct Extent {
    DatasetInfo info;
    int64_t address = -1;
  };
  const Extent& extent(const std::string& name) const;

  std::string path_;
  int64_t file_ = -1;  // hid_t
  bool writing_ = false;
  mutable int fd_ = -1;  // the same file for direct reads, opened on first use
  mutable std::map<std::string, Extent> extents_;
};

}  // namespace spartan::checkpoints
