// Checkpoint save and load throughput against a plain sequential write and read of the same
// bytes on the same disk, in one run: the ratios say what the format (HDF5 datasets with
// checksums, manifest, fsync, atomic rename) costs over raw I/O.
//
//   build/bench/bench_ckpt_io [--mb 256] [--tensors 66] [--rounds 5] [--dir /tmp]
//   build/bench/bench_ckpt_io --digest MODEL_FOLDER     (the resume's base-model digests)
#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "parallel/grid.h"

using namespace spartan;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
bool warm_reads = false;
void drop_caches(const std::string& path) {  // so that reads come from the disk where possible
  if (warm_reads) return;
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
  std::printf("%s: %lld safetensors files, %.2f GB\n", folder.c_str(),
              static_cast<long long>(files), bytes / 1e9);
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkpoint I/O against plain sequential I/O"};
  int64_t mb = 256, count = 66, rounds = 5;
  std::string dir = "/tmp";
  app.add_option("--mb", mb, "total size of the tensors in MB");
  app.add_option("--tensors", count, "number of tensors");
  app.add_option("--rounds", rounds, "alternating rounds of plain and checkpoint I/O");
  app.add_option("--dir", dir, "folder on the disk to measure");
  bool warm = false;
  app.add_flag("--warm", warm, "read from the page cache (no drop): the format's CPU cost alone");
  std::string digest;
  app.add_option("--digest", digest, "instead: time the base-model digests of this model folder");
  CLI11_PARSE(app, argc, argv);
  if (!digest.empty()) return digest_cost(digest);
  warm_reads = warm;
  count = (count + 2) / 3 * 3;  // whole (parameter, exp_avg, exp_avg_sq) triples
  const std::string run = dir + "/spartan-bench-ckpt";
  std::filesystem::remove_all(run);
  std::filesystem::create_directories(run);
  const int64_t per = mb * (1 << 20) / 4 / count;
  std::vector<torch::Tensor> ts;
  checkpoints::SaveRequest req;
  req.run_dir = run;
  req.keep = 1;
  for (int64_t i = 0; i < count; ++i) {
    ts.push_back(torch::randn({per}));
    req.entries.push_back({key(i), ts.back(), {}});
  }
  req.entries.push_back({"rng/pp0", torch::zeros({16}, torch::kInt64), {}});
  const double bytes = double(per) * 4 * count;
  auto grid = parallel::Grid::solo();
  std::vector<double> plain_write, ckpt_write, plain_read, ckpt_read, write_ratio, read_ratio;
  {  // Space for the rounds, written once and freed, so that no round is the first to touch it.
    const std::string scratch = run + "/scratch.bin";
    const int fd = ::open(scratch.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (int k = 0; k < 4; ++k)
      for (const auto& t : ts)
        if (::write(fd, t.data_ptr(), t.nbytes()) != static_cast<ssize_t>(t.nbytes())) return 1;
    ::fsync(fd);
    ::close(fd);
    std::filesystem::remove(scratch);
  }
  double sum = 0;
  for (int64_t round = 1; round <= rounds; ++round) {
    // Plain: a new file, sequential writes, fsync, then the file of the round before deleted, as
    // a save deletes the checkpoint beyond `keep` (1 here) after writing the new one. So both
    // write into space freed before (a thinly provisioned virtual disk serves space never written
    // much more slowly). The two writes take turns going first.
    const std::string plain = run + "/plain-" + std::to_string(round) + ".bin";
    auto write_plain = [&] {
      const auto t0 = Clock::now();
      const int fd = ::open(plain.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      for (const auto& t : ts)
        if (::write(fd, t.data_ptr(), t.nbytes()) != static_cast<ssize_t>(t.nbytes())) return false;
      ::fsync(fd);
      ::close(fd);
      std::filesystem::remove(run + "/plain-" + std::to_string(round - 1) + ".bin");
      plain_write.push_back(since(t0));
      return true;
    };
    req.step = round;
    req.state = {{"step", round},     {"tokens", 0},     {"sampler_epoch", 0},
                 {"sampler_step", 0}, {"adam_steps", 1}, {"loss", 0.0}};
    std::string folder;
    auto save = [&] {
      const auto t0 = Clock::now();
      folder = checkpoints::save(*grid, req);
      ckpt_write.push_back(since(t0));
    };
    if (round % 2 == 1) save();
    if (!write_plain()) return 1;
    if (round % 2 == 0) save();

    // Plain: a sequential read into one buffer.
    drop_caches(plain);
    auto t0 = Clock::now();
    {
      std::vector<char> buf(per * 4);
      const int fd = ::open(plain.c_str(), O_RDONLY);
      for (int64_t i = 0; i < count; ++i)
        if (::read(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) return 1;
      ::close(fd);
    }
    plain_read.push_back(since(t0));
    for (const auto& f : std::filesystem::directory_iterator(folder)) drop_caches(f.path());
    t0 = Clock::now();
    {
      checkpoints::Checkpoint ck(folder);
      for (int64_t i = 0; i < count; ++i) sum += ck.global(key(i))[0].item<float>();
    }
    ckpt_read.push_back(since(t0));
    write_ratio.push_back(plain_write.back() / ckpt_write.back());
    if (std::getenv("BENCH_ROUNDS"))
      std::fprintf(stderr,
                   "round %lld: plain write %.3f s, save %.3f s, plain read %.3f s, load %.3f s\n",
                   static_cast<long long>(round), plain_write.back(), ckpt_write.back(),
                   plain_read.back(), ckpt_read.back());
    read_ratio.push_back(plain_read.back() / ckpt_read.back());
  }
  auto rate = [&](const std::vector<double>& seconds) { return bytes / 1e6 / median(seconds); };
  std::printf("%lld tensors, %.0f MB, in %s; medians of %lld alternating rounds\n",
              static_cast<long long>(count), bytes / 1e6, dir.c_str(),
              static_cast<long long>(rounds));
  std::printf("%-28s %10s %10s %18s\n", "", "MB/s", "ratio", "ratio min-max");
  std::printf("%-28s %10.0f\n", "plain write + fsync", rate(plain_write));
  std::printf("%-28s %10.0f %10.2f %8.2f-%.2f\n", "checkpoint save", rate(ckpt_write),
              median(write_ratio), *std::min_element(write_ratio.begin(), write_ratio.end()),
              *std::max_element(write_ratio.begin(), write_ratio.end()));
  std::printf("%-28s %10.0f\n", "plain read", rate(plain_read));
  std::printf("%-28s %10.0f %10.2f %8.2f-%.2f  (checksums verified)\n", "checkpoint load",
              rate(ckpt_read), median(read_ratio),
              *std::min_element(read_ratio.begin(), read_ratio.end()),
              *std::max_element(read_ratio.begin(), read_ratio.end()));
  std::filesystem::remove_all(run);
  return sum == 12345.678 ? 2 : 0;  // keeps the reads
}
