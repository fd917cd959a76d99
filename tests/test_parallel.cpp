// Distributed training against the single-process run (DESIGN.md §4). Run under
//   mpiexec -n N test_parallel --layout TP,PP,DP
// World rank 0 trains the same model on its own first (no MPI groups: the reference), then every
// rank trains it on the grid, and rank 0 compares per-step losses and the trained tensors,
// gathered from every shard. Ranks check the properties of their own shards (bit-identical gate
// replicas, SPP zero patterns) and agree on the verdict.
//
// Tolerances (fp32): losses 1e-6 relative (measured: about 5e-8); trained tensors 2e-5 of the
// tensor's largest entry (measured: 1e-6 for PP and DP, 7e-6 for TP=2, 1.3e-5 for TP=4). The
// grid changes only the order of additions (row-parallel all-reduces, vocab-parallel softmax, DP
// sums), so the runs differ by rounding. AdamW's eps is 1e-2 here: with 1e-8 Adam turns a
// rounding difference in a near-zero gradient entry into a step of ±lr, which says nothing
// about the grid.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "adapters/adapter.h"
#include "adapters/method.h"
#include "adapters/sora.h"
#include "adapters/spp.h"
#include "checkpoints/checkpoint.h"
#include "common/files.h"
#include "common/memory_use.h"
#include "model/llama.h"
#include "model/plan.h"
#include "parallel/grid.h"
#include "parallel/mpi.h"
#include "tests/mpi_main.h"
#include "trainer/distributed.h"
#include "trainer/trainer.h"

using namespace spartan;

namespace {

parallel::Layout g_layout;
std::unique_ptr<parallel::Grid> g_grid;

// A tiny LLaMA with GQA that every layout in the tests divides: 8 heads, 4 KV heads, 4 layers.
model::LlamaArch test_arch(int64_t kv_heads = 4) {
  model::LlamaArch a;
  a.vocab_size = 96;
  a.hidden_size = 64;
  a.intermediate_size = 96;
  a.num_layers = 4;
  a.num_heads = 8;
  a.num_kv_heads = kv_heads;
  a.max_position_embeddings = 64;
  a.initializer_range = 0.2;
  return a;
}

// Rows of deterministic pseudo-random tokens (no torch RNG), the first 3 labels ignored.
data::Sequences test_rows(int64_t rows, int64_t L, int64_t vocab) {
  data::Sequences s;
  s.seq_len = L;
  uint64_t x = 88172645463325252ull;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < L; ++t) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      s.ids.push_back(static_cast<int64_t>(x % vocab));
      s.labels.push_back(t < 3 ? data::kIgnore : s.ids.back());
    }
  return s;
}

// The base model folder, written by rank 0: random weights, half of every projection's
// entries (the smallest) set to zero, as a pruned model.
// Every file of this job goes under one folder named after rank 0's pid (in $TMPDIR or /tmp),
// removed by rank 0 at the end.
const std::string& scratch() {
  static const std::string dir = [] {
    auto pid = torch::tensor({static_cast<int64_t>(::getpid())});
    g_grid->world().broadcast(pid, 0);
    const char* tmp = std::getenv("TMPDIR");
    return std::string(tmp && *tmp ? tmp : "/tmp") + "/spartan-test-parallel-" +
           std::to_string(pid.item<int64_t>());
  }();
  return dir;
}

std::string base_folder(int64_t kv_heads = 4) {
  static std::map<int64_t, std::string> folders;
  if (folders.count(kv_heads)) return folders[kv_heads];
  const std::string folder = scratch() + "/base-kv" + std::to_string(kv_heads);
  folders[kv_heads] = folder;
  if (g_grid->rank() == 0) {
    torch::manual_seed(11);
    model::Llama m(test_arch(kv_heads), torch::kFloat32);
    m->init_weights();
    torch::NoGradGuard no_grad;
    for (int64_t l = 0; l < m->num_layers(); ++l)
      for (model::Proj p : model::kAllProjections) {
        auto& w = m->projection(l, p)->weight;
        auto cut = std::get<0>(w.abs().flatten().kthvalue(w.numel() / 2));
        w.masked_fill_(w.abs().le(cut), 0.0);
      }
    m->save(folder);
  }
  g_grid->world().barrier();
  return folder;
}

Config test_config(const std::string& method) {
  Config c;
  c.run.seed = 5;
  c.run.log_every = 1000;
  c.adapter.method = method;
  c.adapter.r = 4;
  c.adapter.alpha = 8;
  c.adapter.dropout = 0.0;
  c.adapter.targets = {"q", "k", "v", "o", "gate", "up", "down"};
  if (method == "ia3") c.adapter.targets = {"k", "v", "down"};  // PEFT's LLaMA default
  c.adapter.prompt.num_virtual_tokens = 4;
  c.adapter.prefix.num_virtual_tokens = 3;
  c.adapter.prefix.encoder_hidden_size = 16;
  c.adapter.bottleneck.size = 8;
  c.adapter.compacter.n = 4;
  c.adapter.compacter.rank = 2;
  c.adapter.tiny_attention.heads = 2;
  c.adapter.tiny_attention.head_dim = 2;
  c.adapter.sora.lambda2 = 0.02;  // large enough that some gates reach zero in 3 steps
  c.optim.lr = 1e-2;
  c.optim.weight_decay = 0.01;
  c.optim.eps = 1e-2;
  c.optim.grad_clip = 1.0;
  c.optim.global_batch_size = 8;
  c.optim.micro_batch_size = 2;
  c.optim.max_steps = 3;
  c.optim.warmup_ratio = 0.0;
  c.parallel.tp = g_layout.tp;
  c.parallel.pp = g_layout.pp;
  c.parallel.dp = g_layout.dp;
  return c;
}

struct Run {
  std::vector<double> losses;
  model::NamedTensors trained;  // full tensors, on world rank 0
};

Run train(const Config& c, parallel::Grid& grid, const data::Sequences& rows,
          const std::function<void(model::Llama&)>& after = nullptr, int64_t kv_heads = 4) {
  model::Shard shard =
      grid.world_size() == 1 ? model::Shard{} : model::make_shard(grid, test_arch().num_layers);
  model::Llama m = model::load_llama(base_folder(kv_heads), torch::kFloat32, shard);
  torch::manual_seed(c.run.seed);
  adapters::attach(m, c.adapter);
  m->set_recompute_layers(c.train.recompute == Recompute::layer);
  data::Sequences none;
  const std::string dir = scratch() + "/run-" + std::to_string(grid.rank());
  make_dirs(dir);
  Run run;
  trainer::Trainer t(c, m, grid, rows, none, dir);
  t.on_step = [&run](int64_t, double loss) { run.losses.push_back(loss); };
  t.run();
  run.trained = trainer::gather_to_root(m, grid, adapters::trainable_parameters(m));
  if (after) after(m);
  return run;
}

// Whether every rank's `ok` is true.
bool everywhere(bool ok) {
  auto f = torch::tensor({ok ? 0 : 1}, torch::kInt64);
  g_grid->world().all_reduce(f);
  return f.item<int64_t>() == 0;
}

// `recompute`: the grid run recomputes every layer in the backward pass, the reference does not.
void compare_with_reference(const std::string& method,
                            const std::function<bool(model::Llama&)>& shard_check = nullptr,
                            int64_t kv_heads = 4, bool recompute = false) {
  const auto rows = test_rows(32, 16, test_arch().vocab_size);
  Config c = test_config(method);
  if (kv_heads < g_layout.tp) c.adapter.targets = {"q", "o", "gate", "up", "down"};
  Run ref;
  if (g_grid->rank() == 0) {
    auto solo = parallel::Grid::solo();
    ref = train(c, *solo, rows, nullptr, kv_heads);
  }
  bool shard_ok = true;
  Config grid_config = c;
  if (recompute) grid_config.train.recompute = Recompute::layer;
  Run par = train(
      grid_config, *g_grid, rows,
      [&](model::Llama& m) {
        if (shard_check) shard_ok = shard_check(m);
      },
      kv_heads);
  EXPECT_TRUE(everywhere(shard_ok)) << "a shard check failed on some rank";
  if (g_grid->rank() != 0) return;

  ASSERT_EQ(par.losses.size(), 3u);
  for (size_t s = 0; s < 3; ++s)
    EXPECT_NEAR(par.losses[s], ref.losses[s], 1e-6 * std::abs(ref.losses[s]))
        << method << ": loss of step " << s + 1;
  std::map<std::string, torch::Tensor> mine(par.trained.begin(), par.trained.end());
  ASSERT_EQ(mine.size(), ref.trained.size()) << method << ": number of trained tensors";
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, expected] : ref.trained) {
    ASSERT_TRUE(mine.count(name)) << method << ": " << name << " missing from the grid run";
    const auto& got = mine.at(name);
    ASSERT_EQ(got.sizes(), expected.sizes()) << name;
    const double scale = std::max(1e-3, expected.abs().max().item<double>());
    const double err = (got - expected).abs().max().item<double>() / scale;
    if (err > worst) worst = err, worst_name = name;
  }
  EXPECT_LE(worst, 2e-5) << method << ": worst relative difference in " << worst_name;
  std::printf(
      "[ %s ] layout tp=%lld pp=%lld dp=%lld: %zu tensors, worst relative difference "
      "%.2e (%s), losses %.6f %.6f %.6f\n",
      method.c_str(), (long long)g_layout.tp, (long long)g_layout.pp, (long long)g_layout.dp,
      mine.size(), worst, worst_name.c_str(), par.losses[0], par.losses[1], par.losses[2]);
}

}  // namespace

TEST(Parallel, LoraMatchesOneRank) { compare_with_reference("lora"); }

TEST(Parallel, SoraMatchesOneRankAndGateReplicasAreIdentical) {
  compare_with_reference("sora", [](model::Llama& m) {
    bool identical = true;
    for (const auto& [name, g] : adapters::trainable_parameters(m)) {
      if (!adapters::is_sora_gate(name)) continue;
      for (parallel::Communicator* c : {&g_grid->tp(), &g_grid->dp()}) {
        auto all = c->all_gather(g.detach().unsqueeze(0), 0);
        for (int64_t r = 1; r < all.size(0); ++r)
          identical = identical && torch::equal(all[r], all[0]);
      }
    }
    return identical;
  });
}

TEST(Parallel, SppMatchesOneRankAndEveryShardKeepsItsZeros) {
  std::vector<torch::Tensor> before;
  compare_with_reference("spp", [](model::Llama& m) {
    auto fresh = model::load_llama(base_folder(), torch::kFloat32,
                                   model::make_shard(*g_grid, test_arch().num_layers));
    bool kept = true;
    for (int64_t l = m->first_layer(); l < m->end_layer(); ++l)
      for (model::Proj p : model::kAllProjections) {
        auto& proj = m->projection(l, p);
        auto spp = std::dynamic_pointer_cast<adapters::SppLinear>(proj->adapter());
        const auto zeros = fresh->projection(l, p)->weight.eq(0);
        kept = kept && spp && torch::equal(proj->weight, fresh->projection(l, p)->weight) &&
               torch::equal(spp->merged_weight(proj->weight).eq(0), zeros) &&
               zeros.sum().item<int64_t>() > 0;
      }
    return kept;
  });
}

TEST(Parallel, Ia3MatchesOneRank) { compare_with_reference("ia3"); }

// Recomputed layers on the grid (their collectives run again in the backward pass) against one
// rank that keeps every activation.
TEST(Parallel, SppWithRecomputationMatchesOneRank) {
  compare_with_reference("spp", nullptr, 4, /*recompute=*/true);
}

TEST(Parallel, PromptTuningMatchesOneRank) { compare_with_reference("prompt"); }

TEST(Parallel, HoulsbyMatchesOneRank) { compare_with_reference("houlsby"); }

TEST(Parallel, TinyAttentionMatchesOneRank) { compare_with_reference("tiny_attention"); }

// The prefix encoder feeds every layer, so it runs on one pipeline stage only.
TEST(Parallel, PrefixTuningMatchesOneRank) {
  if (g_layout.pp > 1) GTEST_SKIP() << "prefix tuning refuses pipeline stages";
  compare_with_reference("prefix");
}

// Compacter's A_i are shared by every layer, so it runs on one pipeline stage only.
TEST(Parallel, CompacterMatchesOneRank) {
  if (g_layout.pp > 1) GTEST_SKIP() << "Compacter refuses pipeline stages";
  compare_with_reference("compacter");
}

// TP larger than the number of KV heads: each rank holds the KV head its query heads use.
TEST(Parallel, ReplicatedKvHeadsMatchOneRank) {
  if (g_layout.tp != 4) GTEST_SKIP() << "needs tp = 4 (the model then has 2 KV heads)";
  compare_with_reference("lora", nullptr, /*kv_heads=*/2);
}

// With parallel.dp_overlap, each bucket's DP sum starts from autograd's hook once its gradients
// are complete, in the backward pass of the armed (last) micro-batch only; the gradients then
// equal those of the sums made after the backward pass, bit for bit (two replicas: one addition
// per entry either way). Small buckets, so that there are many.
TEST(Parallel, DpSumsStartDuringTheBackwardPass) {
  const auto& L = g_layout;
  if (L.dp < 2 || L.tp > 1 || L.pp > 1) GTEST_SKIP() << "DP alone";
  model::Llama m = model::load_llama(base_folder(), torch::kFloat32,
                                     model::make_shard(*g_grid, test_arch().num_layers));
  torch::manual_seed(5);
  adapters::attach(m, test_config("lora").adapter);
  const auto params = adapters::trainable_parameters(m);
  const auto rows = test_rows(8, 16, test_arch().vocab_size);
  const auto all_ids = torch::tensor(rows.ids).view({8, 16});
  auto two_micro_batches = [&](trainer::GradientSync& sync) {
    for (int64_t i = 0; i < 2; ++i) {
      const auto ids = all_ids.narrow(0, 4 * g_grid->dp_rank() + 2 * i, 2);
      if (i == 1) sync.arm();
      model::causal_lm_loss(m->forward(ids), ids).backward();
    }
    sync.reduce();
  };
  std::vector<torch::Tensor> after;
  for (bool overlap : {false, true}) {
    for (auto& [name, p] : params) p.mutable_grad() = torch::Tensor();
    trainer::GradientSync sync(m, *g_grid, params, {}, overlap, /*bucket_bytes=*/4096);
    two_micro_batches(sync);
    if (!overlap) {
      EXPECT_EQ(sync.started_in_backward(), 0);
      for (const auto& [name, p] : params) after.push_back(p.grad().clone());
      continue;
    }
    EXPECT_GT(sync.started_in_backward(), 10)
        << "buckets of 4 KiB, " << params.size() << " tensors";
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(torch::equal(params[i].second.grad(), after[i])) << params[i].first;
  }
}

// The communicator's operations on the whole world, against what they must give.
TEST(Communicator, CollectivesAndPointToPoint) {
  auto& w = g_grid->world();
  const int r = w.rank(), n = w.size();
  auto x = torch::full({3}, float(r + 1));
  w.all_reduce(x);
  EXPECT_TRUE(torch::equal(x, torch::full({3}, float(n * (n + 1) / 2))));
  auto m = torch::full({2}, float(r));
  w.all_reduce(m, parallel::ReduceOp::max);
  EXPECT_EQ(m[0].item<float>(), float(n - 1));
  auto avg = torch::full({1}, double(r));
  w.all_reduce(avg, parallel::ReduceOp::avg);
  EXPECT_DOUBLE_EQ(avg.item<double>(), (n - 1) / 2.0);
  auto bf = torch::full({4}, 1.5, torch::kBFloat16);  // reduced in fp32
  w.all_reduce(bf);
  EXPECT_EQ(bf[0].item<float>(), 1.5f * n);
  auto g = w.all_gather(torch::full({2, 1}, float(r)), 1);  // (2, n): column j from rank j
  ASSERT_EQ(g.size(1), n);
  for (int j = 0; j < n; ++j) EXPECT_EQ(g[1][j].item<float>(), float(j));
  auto rs = w.reduce_scatter(torch::arange(2 * n, torch::kFloat32), 0);  // sum, my 2 entries
  EXPECT_TRUE(torch::equal(rs, torch::tensor({2.0f * r * n, (2.0f * r + 1) * n})));
  auto b = torch::full({2}, r == 0 ? 7.0f : 0.0f);
  w.broadcast(b, 0);
  EXPECT_EQ(b[1].item<float>(), 7.0f);
  auto in = torch::empty({2});
  w.send_recv(torch::full({2}, float(r)), (r + 1) % n, in, (r + n - 1) % n);  // a ring
  EXPECT_EQ(in[0].item<float>(), float((r + n - 1) % n));
  w.reset_stats();
  w.all_reduce(x);
  EXPECT_EQ(w.stats().calls, 1);
  EXPECT_EQ(w.stats().bytes, 12);
}

// Bytes each rank moves per step, against the count from the model's shape.
TEST(Parallel, BytesPerStepMatchTheAnalyticCount) {
  const auto& L = g_layout;
  if (!((L.tp == 2 && L.pp == 1 && L.dp == 1) || (L.tp == 1 && L.pp == 2 && L.dp == 1)))
    GTEST_SKIP() << "counted for tp=2 and for pp=2 alone";
  const auto rows = test_rows(32, 16, test_arch().vocab_size);
  const Config c = test_config("lora");
  model::Llama m = model::load_llama(base_folder(), torch::kFloat32,
                                     model::make_shard(*g_grid, test_arch().num_layers));
  torch::manual_seed(c.run.seed);
  adapters::attach(m, c.adapter);
  m->set_recompute_layers(c.train.recompute == Recompute::layer);
  data::Sequences none;
  const std::string dir = scratch() + "/run-" + std::to_string(g_grid->rank());
  make_dirs(dir);
  trainer::Trainer t(c, m, *g_grid, rows, none, dir);
  const auto s = t.run();
  (void)s;
  const auto a = test_arch();
  const int64_t b = c.optim.micro_batch_size, T = 16, H = a.hidden_size, f = 4;
  const int64_t M = c.optim.global_batch_size / b, steps = c.optim.max_steps;
  const int64_t act = b * T * H * f;  // one activation (b, T, H) in fp32
  if (L.tp == 2) {
    // Forward: embedding, o and down of every layer (all-reduce); the vocab-parallel loss
    // reduces three (b, T-1) vectors. Backward: the inputs of attention, MLP and head, except
    // the first attention's: nothing before it is trained, so autograd skips that gradient.
    const int64_t per_micro =
        act * (1 + 2 * a.num_layers) + 3 * b * (T - 1) * f + act * (2 * a.num_layers - 1 + 1);
    // Partial adapter gradients: A of q, k, v, gate, up (r x H), B of o, down (H x r).
    const int64_t partial = 7 * c.adapter.r * H * f * a.num_layers;
    const int64_t per_step = M * per_micro + partial + 8 /* grad norm */;
    EXPECT_EQ(g_grid->tp().stats().bytes, steps * per_step);
  } else {
    // Each micro-batch's activation goes forward and its gradient back over the one boundary;
    // the loss and the gradient norm are summed over the stages (8 bytes each).
    const int64_t per_step = 2 * act * M + 8 + 8;
    EXPECT_EQ(g_grid->pp().stats().bytes, steps * per_step);
  }
  // spartan plan (model/plan.h) predicts the same bytes, for LoRA and, on TP, SPP and SoRA too.
  for (const std::string method : {"lora", "spp", "sora"}) {
    if (method != "lora") {
      if (L.tp != 2) break;
      const Config cm = test_config(method);
      model::Llama mm = model::load_llama(base_folder(), torch::kFloat32,
                                          model::make_shard(*g_grid, test_arch().num_layers));
      torch::manual_seed(cm.run.seed);
      adapters::attach(mm, cm.adapter);
      trainer::Trainer tm(cm, mm, *g_grid, rows, none, dir);
      tm.run();
    }
    model::PlanInputs in;
    in.arch = a;
    in.tp = L.tp;
    in.pp = L.pp;
    in.dp = L.dp;
    in.method = adapters::method(method).costs(c.adapter);
    in.targets = c.adapter.targets;
    in.r = c.adapter.r;
    in.base_bytes = f;
    in.seq_len = T;
    in.micro_batch = b;
    in.global_batch = c.optim.global_batch_size;
    const auto& stage = model::make_plan(in).stages.at(g_grid->pp_rank());
    // (A group of one rank counts what it is given, but nothing crosses a link: the plan
    // counts groups of several ranks.)
    if (L.tp > 1) {
      EXPECT_DOUBLE_EQ(double(g_grid->tp().stats().bytes), double(steps) * stage.tp_bytes)
          << method;
    }
    if (L.pp > 1) {
      EXPECT_DOUBLE_EQ(double(g_grid->pp().stats().bytes), double(steps) * stage.pp_bytes)
          << method;
    }
  }
}

// A resume on TP ranks reads only each rank's slices: a checkpoint saved on one rank (two
// 16 MiB tensors, one split by rows and one by columns when loaded, with their AdamW moments)
// takes about 1/TP of the memory per rank that reading it on one rank takes. Reading a
// column slice through a whole-tensor temporary (as before format 4) adds 16 MiB and fails.
TEST(Parallel, ResumeOnTpHoldsOnlyItsSlices) {
  const auto& L = g_layout;
  if (L.tp < 2 || L.pp > 1 || L.dp > 1) GTEST_SKIP() << "TP alone";
  return_large_blocks_to_kernel();  // freed tensors leave the process: the peaks are what is held
  const std::string run = scratch() + "/resume-memory";
  const int64_t n = 2048;
  const std::vector<std::pair<std::string, int64_t>> tensors = {{"params/rows", 0},
                                                                {"params/cols", 1}};
  if (g_grid->rank() == 0) {
    checkpoints::SaveRequest req;
    req.run_dir = run;
    req.step = 1;
    for (const auto& [key, dim] : tensors) {
      const std::string name = key.substr(7);
      const model::TpPlacement sharded{model::TpPlacement::sharded, dim};
      req.entries.push_back({key, torch::randn({n, n}), sharded});
      req.entries.push_back({"optim/" + name + "/exp_avg", torch::randn({n, n}), sharded});
      req.entries.push_back({"optim/" + name + "/exp_avg_sq", torch::rand({n, n}), sharded});
    }
    req.entries.push_back(
        {"rng/pp0", torch::arange(4, torch::kInt64), {model::TpPlacement::sharded, 0}});
    req.state = {{"step", 1},         {"tokens", 8},     {"sampler_epoch", 0},
                 {"sampler_step", 1}, {"adam_steps", 1}, {"loss", 1.0}};
    checkpoints::save(*parallel::Grid::solo(), req);
  }
  g_grid->world().barrier();
  const std::string folder = checkpoints::latest(run);
  // Every trained tensor of the checkpoint as `grid`'s TP rank holds it; returns the memory added.
  const auto resume = [&](parallel::Grid& grid, int64_t* bytes_read) {
    checkpoints::Checkpoint ck(folder);
    ck.global("rng/pp0");  // the shard file open (and HDF5 started) before the measurement
    std::vector<torch::Tensor> held;
    reset_peak_resident();
    const int64_t before = resident_bytes();
    for (const auto& [key, dim] : ck.manifest()["tensors"].items()) {
      if (key.rfind("rng/", 0) == 0) continue;
      const int64_t split = ck.manifest()["tensors"][key]["shards"][0]["dim"];
      auto shape = std::vector<int64_t>{n, n};
      shape[split] /= grid.layout().tp;
      const auto like = torch::zeros({1}).expand(shape);  // the sizes alone
      held.push_back(ck.local(key, {model::TpPlacement::sharded, split}, like, grid));
      EXPECT_EQ(held.back().sizes(), like.sizes());
    }
    *bytes_read = ck.bytes_read() - 32;
    return peak_resident_bytes() - before;
  };
  auto one_rank = torch::zeros({2}, torch::kInt64);
  if (g_grid->rank() == 0) {
    int64_t bytes = 0;
    one_rank[0] = resume(*parallel::Grid::solo(), &bytes);
    one_rank[1] = bytes;
  }
  g_grid->world().broadcast(one_rank, 0);
  int64_t bytes = 0;
  const int64_t added = resume(*g_grid, &bytes);
  const int64_t whole = 6 * n * n * 4, tp = L.tp;
  EXPECT_EQ(one_rank[1].item<int64_t>(), whole);
  EXPECT_GT(one_rank[0].item<int64_t>(), whole * 9 / 10);  // the measurement sees the tensors
  // Row slices: their own MiB blocks; column slices: every block, each once.
  EXPECT_EQ(bytes, whole / 2 / tp + whole / 2);
  std::printf("resume: one rank added %.1f MiB; rank %d of %lld TP ranks %.1f MiB\n",
              one_rank[0].item<int64_t>() / 1048576.0, g_grid->rank(), static_cast<long long>(tp),
              added / 1048576.0);
  EXPECT_LT(added, one_rank[0].item<int64_t>() / tp * 115 / 100 + (2 << 20))
      << "rank " << g_grid->rank() << " of " << tp << " added " << added << " bytes, one rank "
      << one_rank[0].item<int64_t>();
}

int main(int argc, char** argv) {
  return testing_support::run_mpi_tests(argc, argv, g_layout, g_grid, [] {
    std::filesystem::remove_all(scratch());  // every rank is done
  });
}
