// Where a checkpoint's shard files are written and read: the storage the checkpoint format
// (checkpoint.h) puts its bytes in. The format decides what goes where, packs small tensors and
// checks every CRC-32C; a backend only moves bytes of named datasets. HDF5 is the one backend
// (h5.h); another (a plain file per cell, an object store) implements these two classes and the
// two functions below.
//
// No torch here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace spartan::checkpoints {

enum class ElementType { f32, f64, i64, u16, u8 };
size_t element_size(ElementType t);

struct DatasetInfo {
  std::vector<int64_t> shape;
  ElementType type = ElementType::f32;
  int64_t elements() const;
};

class ShardWriter {
 public:
  virtual ~ShardWriter() = default;
  // A dataset of `shape`, written from `data` (row-major) without a copy where the backend can.
  virtual void write(const std::string& name, const std::vector<int64_t>& shape, ElementType type,
                     const void* data) = 0;
  // A 1-D dataset of `count` elements, filled by write_at().
  virtual void create(const std::string& name, int64_t count, ElementType type) = 0;
  virtual void write_at(const std::string& name, int64_t offset, int64_t count, ElementType type,
                        const void* data) = 0;
  // Makes everything written durable (flush and fsync); the writer is closed afterwards.
  virtual void close_and_sync() = 0;
};

class ShardReader {
 public:
  virtual ~ShardReader() = default;
  virtual const std::string& path() const = 0;
  virtual bool has(const std::string& name) const = 0;
  virtual DatasetInfo info(const std::string& name) const = 0;
  // Whether read_bytes() can read any part of `name`. False for a dataset the backend can only
  // read whole (formats 1 and 2: one HDF5 chunk behind a Fletcher32 filter).
  virtual bool ranged(const std::string& name) const = 0;
  // Bytes [offset, offset + size) of the row-major data of `name` into `data`; a range outside
  // the dataset is an Error. Nothing is verified here: the format's CRCs are (checkpoint.cpp).
  virtual void read_bytes(const std::string& name, int64_t offset, int64_t size,
                          void* data) const = 0;
  // The whole dataset into `data`, checked by the backend's own filters where it has them.
  virtual void read_all(const std::string& name, void* data) const = 0;
};

// The backend's writer creating `path` (truncating it) and its reader of `path`. Errors name
// the path.
std::unique_ptr<ShardWriter> create_shard(const std::string& path);
std::unique_ptr<ShardReader> open_shard(const std::string& path);

}  // namespace spartan::checkpoints
