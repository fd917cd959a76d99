#include "checkpoints/h5.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "common/error.h"

namespace spartan::checkpoints {
namespace {

hid_t native(ElementType t) {
  switch (t) {
    case ElementType::f32:
      return H5T_NATIVE_FLOAT;
    case ElementType::f64:
      return H5T_NATIVE_DOUBLE;
    case ElementType::i64:
      return H5T_NATIVE_INT64;
    case ElementType::u16:
      return H5T_NATIVE_UINT16;
    case ElementType::u8:
      return H5T_NATIVE_UINT8;
  }
  return H5T_NATIVE_FLOAT;
}

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw Error(what, path, "the checkpoint is damaged or incomplete: resume from another one");
}

// HDF5's own error printing is off: errors come back as spartan::Error.
struct QuietHdf5 {
  QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
};

}  // namespace

int64_t DatasetInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t element_size(ElementType t) {
  switch (t) {
    case ElementType::f32:
      return 4;
    case ElementType::f64:
      return 8;
    case ElementType::i64:
      return 8;
    case ElementType::u16:
      return 2;
    case ElementType::u8:
      return 1;
  }
  return 1;
}

H5File::H5File(const std::string& path, const char* mode) : path_(path) {
  static QuietHdf5 quiet;
  writing_ = std::string(mode) == "w";
  // The newest file format checksums the metadata too (superblock, object headers, B-trees).
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
  file_ = writing_ ? H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl)
                   : H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  H5Pclose(fapl);
  if (file_ < 0) {
    if (writing_)
      throw Error("cannot create the checkpoint file", path,
                  "check that the run folder is writable and the disk has space");
    fail("cannot open the checkpoint file (missing or not HDF5)", path);
  }
}

H5File::~H5File() {
  if (file_ >= 0) H5Fclose(file_);
  if (fd_ >= 0) ::close(fd_);
}

std::unique_ptr<ShardWriter> create_shard(const std::string& path) {
  return std::make_unique<H5File>(path, "w");
}

std::unique_ptr<ShardReader> open_shard(const std::string& path) {
  return std::make_unique<H5File>(path, "r");
}

namespace {

// Dataset `name` (and its groups) of `type` over `space`: one contiguous extent, allocated when
// written, never pre-filled. Returns the open dataset, or < 0.
hid_t create_contiguous(hid_t file, const std::string& name, ElementType type, hid_t space) {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_layout(dcpl, H5D_CONTIGUOUS);
  H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
  const hid_t dset = H5Dcreate2(file, name.c_str(), native(type), space, lcpl, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Pclose(lcpl);
  return dset;
}

}  // namespace

void H5File::write(const std::string& name, const std::vector<int64_t>& shape, ElementType type,
                   const void* data) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  hid_t space = dims.empty()
                    ? H5Screate(H5S_SCALAR)
                    : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t dset = create_contiguous(file_, name, type, space);
  herr_t rc = dset < 0 ? -1 : H5Dwrite(dset, native(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  if (dset >= 0) H5Dclose(dset);
  H5Sclose(space);
  if (rc < 0)
    throw Error("cannot write dataset " + name, path_, "check the disk space of the run folder");
}

void H5File::create(const std::string& name, int64_t count, ElementType type) {
  const hsize_t dims[1] = {static_cast<hsize_t>(count)};
  hid_t space = H5Screate_simple(1, dims, nullptr);
  const hid_t dset = create_contiguous(file_, name, type, space);
  if (dset >= 0) H5Dclose(dset);
  H5Sclose(space);
  if (dset < 0)
    throw Error("cannot create dataset " + name, path_, "check the disk space of the run folder");
}

void H5File::write_at(const std::string& name, int64_t offset, int64_t count, ElementType type,
                      const void* data) {
  hid_t dset = H5Dopen2(file_, name.c_str(), H5P_DEFAULT);
  herr_t rc = dset < 0 ? -1 : 0;
  if (rc == 0) {
    hid_t fspace = H5Dget_space(dset);
    hsize_t extent[1] = {0};
    const hsize_t start[1] = {static_cast<hsize_t>(offset)}, n[1] = {static_cast<hsize_t>(count)};
    if (H5Sget_simple_extent_ndims(fspace) != 1 || offset < 0 || count < 0) rc = -1;
    if (rc == 0) H5Sget_simple_extent_dims(fspace, extent, nullptr);
    if (rc == 0 && start[0] + n[0] > extent[0]) rc = -1;
    if (rc == 0) rc = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, n, nullptr);
    hid_t mspace = H5Screate_simple(1, n, nullptr);
    if (rc == 0) rc = H5Dwrite(dset, native(type), mspace, fspace, H5P_DEFAULT, data);
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Dclose(dset);
  }
  if (rc < 0)
    throw Error("cannot write dataset " + name, path_, "check the disk space of the run folder");
}

const H5File::Extent& H5File::extent(const std::string& name) const {
  auto it = extents_.find(name);
  if (it != extents_.end()) return it->second;
  if (!has(name)) fail("dataset " + name + " is missing", path_);
  hid_t dset = H5Dopen2(file_, name.c_str(), H5P_DEFAULT);
  if (dset < 0) fail("cannot open dataset " + name, path_);
  Extent e;
  hid_t space = H5Dget_space(dset);
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(std::max(rank, 0));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  H5Sclose(space);
  e.info.shape.assign(dims.begin(), dims.end());
  hid_t type = H5Dget_type(dset);
  const size_t size = H5Tget_size(type);
  if (H5Tget_class(type) == H5T_FLOAT)
    e.info.type = size == 8 ? ElementType::f64 : ElementType::f32;
  else
    e.info.type = size == 8 ? ElementType::i64 : size == 2 ? ElementType::u16 : ElementType::u8;
  H5Tclose(type);
  hid_t dcpl = H5Dget_create_plist(dset);
  const bool contiguous = H5Pget_layout(dcpl) == H5D_CONTIGUOUS;
  H5Pclose(dcpl);
  if (contiguous) {
    const haddr_t address = H5Dget_offset(dset);  // undefined until written
    if (address != HADDR_UNDEF)
      e.address = static_cast<int64_t>(address);
    else if (e.info.elements() > 0) {
      H5Dclose(dset);
      fail("dataset " + name + " was never written", path_);
    }
  }
  H5Dclose(dset);
  return extents_[name] = e;
}

bool H5File::has(const std::string& name) const {
  return H5Lexists(file_, name.c_str(), H5P_DEFAULT) > 0;
}

DatasetInfo H5File::info(const std::string& name) const { return extent(name).info; }

bool H5File::ranged(const std::string& name) const {
  const Extent& e = extent(name);
  return e.address >= 0 || e.info.elements() == 0;
}

void H5File::read_bytes(const std::string& name, int64_t offset, int64_t size, void* data) const {
  const Extent& e = extent(name);
  const int64_t total = e.info.elements() * static_cast<int64_t>(element_size(e.info.type));
  if (offset < 0 || size < 0 || offset > total || size > total - offset)
    fail("dataset " + name + " is shorter than the manifest says", path_);
  if (size == 0) return;
  if (e.address < 0) fail("dataset " + name + " is read in part", path_);
  if (fd_ < 0) fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail("cannot open the checkpoint file", path_);
  auto* out = static_cast<char*>(data);
  off_t at = static_cast<off_t>(e.address + offset);
  for (int64_t done = 0; done < size;) {
    const ssize_t got = ::pread(fd_, out + done, static_cast<size_t>(size - done), at);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) fail("dataset " + name + " cannot be read", path_);
    done += got;
    at += got;
  }
}

void H5File::read_all(const std::string& name, void* data) const {
  const Extent& e = extent(name);
  if (e.address >= 0) {
    read_bytes(name, 0, e.info.elements() * static_cast<int64_t>(element_size(e.info.type)), data);
    return;
  }
  hid_t dset = H5Dopen2(file_, name.c_str(), H5P_DEFAULT);
  const herr_t rc = H5Dread(dset, native(e.info.type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  H5Dclose(dset);
  if (rc < 0) fail("dataset " + name + " fails its checksum or cannot be read", path_);
}

void H5File::close_and_sync() {
  if (file_ < 0) return;
  const herr_t flushed = H5Fflush(file_, H5F_SCOPE_GLOBAL);
  const herr_t closed = H5Fclose(file_);
  file_ = -1;
  if (flushed < 0 || closed < 0)
    throw Error("cannot finish writing the checkpoint file", path_,
                "check the disk space of the run folder");
  const int fd = ::open(path_.c_str(), O_RDONLY);
  if (fd < 0 || ::fsync(fd) != 0) {
    if (fd >= 0) ::close(fd);
    throw Error("cannot sync the checkpoint file to disk", path_, "check the file system");
  }
  ::close(fd);
}

}  // namespace spartan::checkpoints
