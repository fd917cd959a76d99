// kernels/ against the memory roofline, in one run: each kernel's time for a weight-sized
// tensor, the bytes it must move (each input read once, the output written once), and the same
// bytes moved by a plain device copy (`dst.copy_(src)`) in the same process. Synchronised around
// each call on the GPU, after a warm-up, median of the repeats; beside it the torch expression
// the kernel replaces (for SPP's gradients, the CPU reference's torch operations on the device).
//
//   build/bench/bench_kernels [--rows 8192 --cols 8192] [--dtype bf16] [--device cpu|cuda]
//                             [--repeats 20]
#include "kernels/kernels.h"

#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "trainer/process.h"

namespace {

// Median seconds of `repeats` calls of f after two warm-ups; synchronised around each call on
// the GPU (a host clock around a synchronised call: launch overhead is small against the
// hundreds of microseconds a weight-sized pass takes).
double median_seconds(const std::function<void()>& f, int repeats, bool cuda) {
  auto sync = [cuda] {
    if (cuda) torch::cuda::synchronize();
  };
  for (int i = 0; i < 2; ++i) f();
  sync();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    sync();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kernels/ against a device copy of the same bytes"};
  int64_t rows = 8192, cols = 8192;
  int repeats = 20;
  std::string dtype_name = "bf16", device_name = "cpu";
  app.add_option("--rows", rows, "rows of the weight");
  app.add_option("--cols", cols, "columns of the weight");
  app.add_option("--dtype", dtype_name, "dtype of the base weight")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_option("--device", device_name, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--repeats", repeats, "timed repeats (median)");
  CLI11_PARSE(app, argc, argv);
  spartan::trainer::configure_process();  // threads and allocator as spartan runs
  const bool cuda = device_name == "cuda";
  if (cuda && !torch::cuda::is_available()) {
    std::printf("no GPU visible: nothing to measure on cuda\n");
    return 0;
  }
  const auto dtype = dtype_name == "fp32"   ? torch::kFloat32
                     : dtype_name == "bf16" ? torch::kBFloat16
                                            : torch::kFloat16;
  const auto device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  auto base = torch::randn({rows, cols}, torch::TensorOptions().device(device));
  base.masked_fill_(torch::rand_like(base) < 0.5, 0.0);
  base = base.to(dtype);
  auto delta = 0.01 * torch::randn({rows, cols}, torch::TensorOptions().device(device));
  const double entries = static_cast<double>(rows * cols), elem = base.element_size();

  // Each kernel against the roofline (a copy that reads and writes its bytes) and the torch
  // expression it replaces.
  const auto measure = [&](const char* what, double bytes, const std::function<void()>& kernel,
                           const std::function<void()>& expression) {
    auto src = torch::empty({static_cast<int64_t>(bytes / 2)},
                            torch::TensorOptions().dtype(torch::kUInt8).device(device));
    auto dst = torch::empty_like(src);
    const double copy_s = median_seconds([&] { dst.copy_(src); }, repeats, cuda);
    const double kernel_s = median_seconds(kernel, repeats, cuda);
    const double torch_s = median_seconds(expression, repeats, cuda);
    std::printf("%s %lld x %lld, %s base, on %s: %.1f MB moved\n", what,
                static_cast<long long>(rows), static_cast<long long>(cols), dtype_name.c_str(),
                device_name.c_str(), bytes / 1e6);
    std::printf("  copy (roofline)  %9.3f ms  %7.1f GB/s\n", copy_s * 1e3, bytes / copy_s / 1e9);
    std::printf("  kernel           %9.3f ms  %7.1f GB/s  %.2f of the copy\n", kernel_s * 1e3,
                bytes / kernel_s / 1e9, copy_s / kernel_s);
    std::printf("  torch expression %9.3f ms  %7.1f GB/s  kernel / torch = %.2fx\n", torch_s * 1e3,
                bytes / torch_s / 1e9, torch_s / kernel_s);
  };

  // The masked merge: reads the base and the fp32 delta, writes the base's dtype.
  measure(
      "masked_merge (fp32 delta)", entries * (elem + 4.0 + elem),
      [&] { spartan::kernels::masked_merge(base, delta); },
      [&] { (base.to(torch::kFloat32) + delta).masked_fill_(base.eq(0), 0.0).to(dtype); });

  // SPP (r = 16, the weight's rows in 16 blocks): the effective weight in the base's dtype
  // (reads W̃, writes W_eff), and its gradients from a gradient in the base's dtype (reads G
  // and W̃ once at the roofline; the kernels read them twice).
  const int64_t r = 16, per = std::max<int64_t>(1, rows / r);
  auto alpha = torch::randn({(rows + per - 1) / per, cols}, torch::TensorOptions().device(device));
  auto beta = torch::randn({rows, 1}, torch::TensorOptions().device(device));
  auto grad = torch::randn({rows, cols}, torch::TensorOptions().device(device)).to(dtype);
  const double s = 2.0;
  measure(
      "spp_effective_weight", entries * 2 * elem,
      [&] { spartan::kernels::spp_effective_weight(base, alpha, beta, per, 0, s, dtype); },
      [&] {
        (base.to(torch::kFloat32) * (1.0 + s * alpha.repeat_interleave(per, 0) * beta)).to(dtype);
      });
  measure(
      "spp_weight_grads", entries * 2 * elem,
      [&] { spartan::kernels::spp_weight_grads(grad, base, alpha, beta, per, 0, s); },
      [&] { spartan::kernels::cpu::spp_weight_grads(grad, base, alpha, beta, per, 0, s); });
  return 0;
}
