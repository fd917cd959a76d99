// Checkpoint save and load throughput against a plain sequential write and read of the same
// bytes on the same disk, in one run: the ratios say what the format (HDF5 datasets with
// checksums, manifest, fsync, atomic rename) costs over raw I/O.
//
//   build/bench/bench_ckpt_io [--mb 256] [--tensors 64] [--dir /tmp]
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "checkpoints/checkpoint.h"
#include "parallel/grid.h"

using namespace spartan;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
void drop_caches(const std::string& path) {  // so that reads come from the disk where possible
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkpoint I/O against plain sequential I/O"};
  int64_t mb = 256, count = 64;
  std::string dir = "/tmp";
  app.add_option("--mb", mb, "total size of the tensors in MB");
  app.add_option("--tensors", count, "number of tensors");
  app.add_option("--dir", dir, "folder on the disk to measure");
  CLI11_PARSE(app, argc, argv);
  const std::string run = dir + "/spartan-bench-ckpt";
  std::filesystem::remove_all(run);
  std::filesystem::create_directories(run);
  const int64_t per = mb * (1 << 20) / 4 / count;
  std::vector<torch::Tensor> ts;
  checkpoints::SaveRequest req;
  req.run_dir = run;
  req.step = 1;
  for (int64_t i = 0; i < count; ++i) {
    ts.push_back(torch::randn({per}));
    req.entries.push_back({"params/t" + std::to_string(i), ts.back(), {}});
  }
  const double bytes = double(per) * 4 * count;
  auto grid = parallel::Grid::solo();

  // Plain: one file, sequential writes, fsync; then a sequential read.
  const std::string plain = run + "/plain.bin";
  auto t0 = Clock::now();
  {
    const int fd = ::open(plain.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (const auto& t : ts)
      if (::write(fd, t.data_ptr(), t.nbytes()) != static_cast<ssize_t>(t.nbytes())) return 1;
    ::fsync(fd);
    ::close(fd);
  }
  const double plain_write = since(t0);
  t0 = Clock::now();
  const std::string folder = checkpoints::save(*grid, req);
  const double ckpt_write = since(t0);

  drop_caches(plain);
  t0 = Clock::now();
  {
    std::vector<char> buf(per * 4);
    const int fd = ::open(plain.c_str(), O_RDONLY);
    for (int64_t i = 0; i < count; ++i)
      if (::read(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) return 1;
    ::close(fd);
  }
  const double plain_read = since(t0);
  for (const auto& f : std::filesystem::directory_iterator(folder)) drop_caches(f.path());
  t0 = Clock::now();
  checkpoints::Checkpoint ck(folder);
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) sum += ck.global("params/t" + std::to_string(i))[0].item<float>();
  const double ckpt_read = since(t0);

  std::printf("%lld tensors, %.0f MB, in %s\n", static_cast<long long>(count), bytes / 1e6,
              dir.c_str());
  std::printf("%-28s %10s %10s\n", "", "MB/s", "ratio");
  std::printf("%-28s %10.0f\n", "plain write + fsync", bytes / 1e6 / plain_write);
  std::printf("%-28s %10.0f %10.2f\n", "checkpoint save", bytes / 1e6 / ckpt_write,
              plain_write / ckpt_write);
  std::printf("%-28s %10.0f\n", "plain read", bytes / 1e6 / plain_read);
  std::printf("%-28s %10.0f %10.2f  (checksums verified)\n", "checkpoint load",
              bytes / 1e6 / ckpt_read, plain_read / ckpt_read);
  std::filesystem::remove_all(run);
  return sum == 12345.678 ? 2 : 0;  // keeps the reads
}
