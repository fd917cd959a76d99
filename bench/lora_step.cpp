// Benchmark: tokens/s of one LoRA training step (forward, backward, AdamW) on a LLaMA shape,
// next to (a) a GEMM roofline measured in this process for the same matrix shapes and (b) Hugging
// Face transformers + PEFT on the same torch, same model, batch and LoRA config, run from here.
//
//   bench_lora_step [--layers 6 --hidden 512 --intermediate 1376 --heads 8 --kv-heads 8
//                    --vocab 32000 --seq 256 --batch 4 --rank 8 --steps 5]
//                   [--method lora|sora|spp|ia3|houlsby|compacter|tiny_attention|prompt|prefix
//                    --spp-form effective|blocked --spp-keep-weight --dropout 0]  (other sizes:
//                    their defaults)
//                   [--peer PYTHON]   (default: .venv/bin/python if it exists; LoRA only,
//                                      as PEFT has neither SoRA nor SPP)
//
// The roofline is the time of the step's unavoidable matrix products alone: for every frozen
// projection and the LM head, the forward product and the input-gradient product of the backward
// (a frozen weight needs no weight gradient), each timed as torch::mm on its own shape.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "adapters/method.h"
#include "model/inspect.h"
#include "model/llama.h"
#include "trainer/optimizer.h"
#include "trainer/process.h"

using namespace spartan;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median time of a (m, k) x (k, n) product.
double time_mm(int64_t m, int64_t k, int64_t n, int reps) {
  auto a = torch::randn({m, k}), b = torch::randn({k, n});
  torch::mm(a, b);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    auto c = torch::mm(a, b);
    t.push_back(seconds_since(t0));
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tokens/s of a LoRA training step vs a GEMM roofline and HF PEFT"};
  int64_t layers = 6, hidden = 512, intermediate = 1376, heads = 8, kv_heads = 8, vocab = 32000,
          seq = 256, batch = 4, rank = 8, steps = 5;
  std::string peer = ".venv/bin/python", method = "lora", spp_form = "effective";
  double dropout = 0.0;
  app.add_option("--layers", layers);
  app.add_option("--hidden", hidden);
  app.add_option("--intermediate", intermediate);
  app.add_option("--heads", heads);
  app.add_option("--kv-heads", kv_heads);
  app.add_option("--vocab", vocab);
  app.add_option("--seq", seq);
  app.add_option("--batch", batch);
  app.add_option("--rank", rank);
  app.add_option("--steps", steps);
  app.add_option("--peer", peer, "python of the peer environment; empty to skip");
  std::vector<std::string> adapter_methods;  // every registered method but full training
  for (const adapters::Method* m : adapters::methods())
    if (m->site() != adapters::Site::base) adapter_methods.push_back(m->name());
  app.add_option("--method", method)->check(CLI::IsMember(adapter_methods));
  app.add_option("--spp-form", spp_form)->check(CLI::IsMember(option_names<SppForm>()));
  bool spp_keep_weight = false;  // autograd keeps W_eff instead of the backward rebuilding it
  app.add_flag("--spp-keep-weight", spp_keep_weight);
  app.add_option("--dropout", dropout);
  CLI11_PARSE(app, argc, argv);
  trainer::configure_process();

  model::LlamaArch arch;
  arch.vocab_size = vocab;
  arch.hidden_size = hidden;
  arch.intermediate_size = intermediate;
  arch.num_layers = layers;
  arch.num_heads = heads;
  arch.num_kv_heads = kv_heads;
  arch.max_position_embeddings = seq;
  torch::manual_seed(0);
  model::Llama m(arch, torch::kFloat32);
  m->init_weights();
  AdapterConfig cfg;
  cfg.method = method;
  cfg.r = rank;
  cfg.alpha = 2.0 * rank;
  cfg.dropout = dropout;
  cfg.spp.form = *option_named<SppForm>(spp_form);
  cfg.spp.recompute_weight = !spp_keep_weight;
  adapters::attach(m, cfg);
  trainer::fit_allocator_to(model::largest_projection_bytes(m));  // as spartan train does
  auto params = adapters::trainable_parameters(m);
  trainer::AdamW opt(params, trainer::decay_matrices(params), {});
  m->train();
  const int64_t tokens = batch * seq;
  auto ids = torch::randint(vocab, {batch, seq}, torch::kInt64);

  std::vector<double> times;
  for (int64_t s = 0; s <= steps; ++s) {
    auto t0 = Clock::now();
    auto loss = model::causal_lm_loss(m->forward(ids), ids);
    loss.backward();
    opt.step(1e-4);
    opt.zero_grad();
    if (s > 0) times.push_back(seconds_since(t0));  // the first step warms up
  }
  const double step_s = median(times);

  // Roofline: forward and input-gradient products of every frozen matrix.
  const int64_t hd = hidden / heads, kv = kv_heads * hd;
  struct Shape {
    int64_t in, out, count;
  };
  std::vector<Shape> shapes = {{hidden, hidden, 2 * layers},        // q, o
                               {hidden, kv, 2 * layers},            // k, v
                               {hidden, intermediate, 2 * layers},  // gate, up
                               {intermediate, hidden, layers},      // down
                               {hidden, vocab, 1}};                 // LM head
  double roof_s = 0, flops = 0;
  for (const auto& s : shapes) {
    const double fwd = time_mm(tokens, s.in, s.out, 5);  // x · Wᵀ
    const double bwd = time_mm(tokens, s.out, s.in, 5);  // dy · W
    roof_s += s.count * (fwd + bwd);
    flops += s.count * 2.0 * 2.0 * tokens * s.in * s.out;
  }

  std::printf(
      "shape        %lld layers, hidden %lld, intermediate %lld, heads %lld (kv %lld), "
      "vocab %lld; batch %lld x %lld tokens; %s%s r=%lld dropout %g on q,k,v,o,gate,up,down; "
      "torch threads %d (MKL products on the same threads)\n",
      (long long)layers, (long long)hidden, (long long)intermediate, (long long)heads,
      (long long)kv_heads, (long long)vocab, (long long)batch, (long long)seq, method.c_str(),
      method == "spp" ? (" (" + spp_form + ")").c_str() : "", (long long)rank, dropout,
      torch::get_num_threads());
  std::printf("spartan      %8.1f tokens/s  (step %.3f s, median of %lld)\n", tokens / step_s,
              step_s, (long long)steps);
  std::printf("roofline     %8.1f tokens/s  (frozen-matrix products alone: %.1f GFLOP/s)\n",
              tokens / roof_s, flops / roof_s / 1e9);
  std::printf("ratio        spartan / roofline = %.2f\n", roof_s / step_s);

  if (method != "lora" || dropout != 0) {
    std::printf("HF PEFT      not run (the peer covers LoRA without dropout)\n");
  } else if (!peer.empty() && std::system(("test -x " + peer).c_str()) == 0) {
    char cmd[1024];
    std::snprintf(cmd, sizeof cmd,
                  "%s bench/peer_lora_step.py --layers %lld --hidden %lld --intermediate %lld "
                  "--heads %lld --kv_heads %lld --vocab %lld --seq %lld --batch %lld --rank %lld "
                  "--steps %lld --threads %d 2>/dev/null",  // the same threads
                  peer.c_str(), (long long)layers, (long long)hidden, (long long)intermediate,
                  (long long)heads, (long long)kv_heads, (long long)vocab, (long long)seq,
                  (long long)batch, (long long)rank, (long long)steps, torch::get_num_threads());
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd, "r"), pclose);
    double peer_tps = 0;
    if (pipe && std::fscanf(pipe.get(), "peer_tokens_per_s %lf", &peer_tps) == 1 && peer_tps > 0) {
      std::printf("HF PEFT      %8.1f tokens/s  (transformers + peft on the same torch)\n",
                  peer_tps);
      std::printf("ratio        spartan / HF PEFT = %.2f\n", tokens / step_s / peer_tps);
    } else {
      std::printf("HF PEFT      failed to run: %s\n", cmd);
      return 1;
    }
  } else {
    std::printf("HF PEFT      skipped (no peer python at '%s'; run scripts/peer-env)\n",
                peer.c_str());
  }
  return 0;
}
