// Checkpoint save and load throughput against a plain sequential write and read of the same
// bytes on the same disk, in one run: the ratios say what the format (HDF5 datasets with
// checksums, manifest, fsync, atomic rename) costs over raw I/O.
//
//   build/bench/bench_ckpt_io [--mb 256] [--tensors 66] [--dir /tmp]
//   build/bench/bench_ckpt_io --digest MODEL_FOLDER     (the resume's base-model digests)
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
// Tensor i as the trainer names it: a trained tensor, then its two AdamW moments.
std::string key(int64_t i) {
  const std::string name = "t" + std::to_string(i / 3);
  const char* role[] = {"params/", "optim/", "optim/"};
  const char* moment[] = {"", "/exp_avg", "/exp_avg_sq"};
  return role[i % 3] + name + moment[i % 3];
}

// The base-model digests a resume compares, on a model folder: the structural one (config.json,
// names, dtypes, shapes) and the sampled value digest, from a cold page cache and again warm.
int digest_cost(const std::string& folder) {
  double bytes = 0;
  int64_t files = 0;
  auto drop = [&] {
    for (const auto& f : std::filesystem::directory_iterator(folder))
      if (f.path().extension() == ".safetensors") drop_caches(f.path());
  };
  for (const auto& f : std::filesystem::directory_iterator(folder))
    if (f.path().extension() == ".safetensors") {
      bytes += double(f.file_size());
      ++files;
    }
  std::printf("%s: %lld safetensors files, %.2f GB\n", folder.c_str(), static_cast<long long>(files),
              bytes / 1e9);
  std::printf("%-34s %10s\n", "", "seconds");
  for (bool cold : {true, false}) {
    if (cold) drop();
    auto t0 = Clock::now();
    const std::string a = checkpoints::base_model_digest(folder);
    const double structural = since(t0);
    if (cold) drop();
    t0 = Clock::now();
    const std::string b = checkpoints::base_values_digest(folder);
    const double values = since(t0);
    const char* cache = cold ? "cold" : "warm";
    std::printf("structural digest (%s cache)       %10.3f  %s\n", cache, structural, a.c_str());
    std::printf("sampled value digest (%s cache)    %10.3f  %s\n", cache, values, b.c_str());
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkpoint I/O against plain sequential I/O"};
  int64_t mb = 256, count = 66;
  std::string dir = "/tmp";
  app.add_option("--mb", mb, "total size of the tensors in MB");
  app.add_option("--tensors", count, "number of tensors");
  app.add_option("--dir", dir, "folder on the disk to measure");
  std::string digest;
  app.add_option("--digest", digest, "instead: time the base-model digests of this model folder");
  CLI11_PARSE(app, argc, argv);
  if (!digest.empty()) return digest_cost(digest);
  count = (count + 2) / 3 * 3;  // whole (parameter, exp_avg, exp_avg_sq) triples
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
    req.entries.push_back({key(i), ts.back(), {}});
  }
  req.entries.push_back({"rng/pp0", torch::zeros({16}, torch::kInt64), {}});
  req.state = {{"step", 1},         {"tokens", 0},     {"sampler_epoch", 0},
               {"sampler_step", 0}, {"adam_steps", 1}, {"loss", 0.0}};
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
  for (int64_t i = 0; i < count; ++i) sum += ck.global(key(i))[0].item<float>();
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
