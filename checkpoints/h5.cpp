#include "checkpoints/h5.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include "common/error.h"

namespace spartan::checkpoints {
namespace {

hid_t native(H5Type t) {
  switch (t) {
    case H5Type::f32: return H5T_NATIVE_FLOAT;
    case H5Type::f64: return H5T_NATIVE_DOUBLE;
    case H5Type::i64: return H5T_NATIVE_INT64;
    case H5Type::u16: return H5T_NATIVE_UINT16;
    case H5Type::u8: return H5T_NATIVE_UINT8;
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

size_t h5_type_size(H5Type t) {
  switch (t) {
    case H5Type::f32: return 4;
    case H5Type::f64: return 8;
    case H5Type::i64: return 8;
    case H5Type::u16: return 2;
    case H5Type::u8: return 1;
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
}

void H5File::write(const std::string& name, const std::vector<int64_t>& shape, H5Type type,
                   const void* data) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  if (dims.empty()) dims.push_back(1);  // checksums need chunks, which need a rank
  for (auto& d : dims) d = std::max<hsize_t>(d, 1);
  hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, static_cast<int>(dims.size()), dims.data());
  H5Pset_fletcher32(dcpl);
  hid_t dset = H5Dcreate2(file_, name.c_str(), native(type), space, lcpl, dcpl, H5P_DEFAULT);
  herr_t rc = dset < 0 ? -1 : H5Dwrite(dset, native(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  if (dset >= 0) H5Dclose(dset);
  H5Pclose(dcpl);
  H5Pclose(lcpl);
  H5Sclose(space);
  if (rc < 0)
    throw Error("cannot write dataset " + name, path_,
                "check the disk space of the run folder");
}

bool H5File::has(const std::string& name) const {
  return H5Lexists(file_, name.c_str(), H5P_DEFAULT) > 0;
}

H5Dataset H5File::info(const std::string& name) const {
  if (!has(name)) fail("dataset " + name + " is missing", path_);
  hid_t dset = H5Dopen2(file_, name.c_str(), H5P_DEFAULT);
  if (dset < 0) fail("cannot open dataset " + name, path_);
  hid_t space = H5Dget_space(dset);
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(std::max(rank, 0));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  hid_t type = H5Dget_type(dset);
  H5Dataset out;
  out.shape.assign(dims.begin(), dims.end());
  const size_t size = H5Tget_size(type);
  const H5T_class_t cls = H5Tget_class(type);
  if (cls == H5T_FLOAT) out.type = size == 8 ? H5Type::f64 : H5Type::f32;
  else if (size == 8) out.type = H5Type::i64;
  else if (size == 2) out.type = H5Type::u16;
  else out.type = H5Type::u8;
  H5Tclose(type);
  H5Sclose(space);
  H5Dclose(dset);
  return out;
}

void H5File::read(const std::string& name, void* data) const {
  const H5Dataset d = info(name);
  hid_t dset = H5Dopen2(file_, name.c_str(), H5P_DEFAULT);
  const herr_t rc = H5Dread(dset, native(d.type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
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
