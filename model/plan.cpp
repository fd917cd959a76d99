#include "model/plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "model/memory.h"

namespace spartan::model {

std::vector<ProjShape> projections(const LlamaArch& a) {
  const double h = double(a.hidden_size), I = double(a.intermediate_size);
  const double q = double(a.num_heads) * double(a.head_dim());
  const double kv = double(a.num_kv_heads) * double(a.head_dim());
  return {{"q", q, h, true},    {"k", kv, h, true}, {"v", kv, h, true},   {"o", h, q, false},
          {"gate", I, h, true}, {"up", I, h, true}, {"down", h, I, false}};
}

namespace {

constexpr double kGroupBuffers = 0.25e9;  // NCCL's buffers for one communicating group
constexpr double kContext = 2e9;          // CUDA context, cuBLAS workspaces, allocator slack
constexpr double kSlack = 0.10;           // fragmentation, on activations and logits

// Whether a projection is among the configured targets (adapter.targets).
bool listed(const PlanInputs& in, const std::string& proj) {
  return std::find(in.targets.begin(), in.targets.end(), proj) != in.targets.end();
}
// Whether a projection trains: a target, or any projection where everything trains.
bool targeted(const PlanInputs& in, const std::string& proj) {
  return in.method->trains_everything() || listed(in, proj);
}

// Trainable entries of one layer: on one TP rank (`local`), and of the whole layer.
struct Entries {
  double local = 0, whole = 0, replicated = 0;  // replicated: held whole by every TP rank
  double gates = 0;                             // SoRA's gates (also replicated)
};

Entries layer_entries(const PlanInputs& in) {
  const double t = double(in.tp), r = double(in.r);
  Entries e;
  for (const auto& p : projections(in.arch)) {
    if (!targeted(in, p.name)) continue;
    const ProjEntries pe = in.method->entries(p, r);
    e.local += pe.split / t + pe.whole;
    e.replicated += pe.whole;
    e.whole += pe.split + pe.whole;
    e.gates += pe.gates;
  }
  if (in.method->trains_everything()) {  // the two norms, replicated over TP
    const double h = double(in.arch.hidden_size);
    e.local += 2 * h;
    e.replicated += 2 * h;
    e.whole += 2 * h;
  }
  return e;
}

// Bytes autograd keeps for one layer and one micro-batch, read from the code:
//   RMSNorm (x2)   its fp32 working copy (and, in full training, its normalised output)
//   attention      q after RoPE, k and v (repeated for GQA, materialised by the reshape), the
//                  fp32 softmax output and its cast, the attention output (o's input) when o
//                  trains; RoPE keeps nothing (its tables need no gradient)
//   MLP            gate's output, SiLU of it, up's output, and their product (down's input)
//                  when down trains
//   inputs         the norms' outputs, kept for the q/k/v and gate/up adapters' gradients
//   adapters       what each method keeps at a targeted projection, as its MethodCosts says
//                  (adapters/lora.cpp, spp.cpp, ia3.cpp, full.cpp)
double layer_activations(const PlanInputs& in) {
  const LlamaArch& a = in.arch;
  const double c = double(in.base_bytes), t = double(in.tp);
  const double b = double(in.micro_batch), s = double(in.seq_len), N = b * s;
  const double h = double(a.hidden_size), I = double(a.intermediate_size);
  auto trains = [&](const char* p) { return targeted(in, p); };
  const bool everything = in.method->trains_everything();
  double bytes = 2 * (4 + (everything ? c : 0)) * N * h;  // the norms (their weights may train)
  // The norms' outputs, kept for the weight-side gradients of q/k/v and gate/up.
  const bool input_side = in.method->reads_norm_outputs();
  bytes += c * N * (input_side && (trains("q") || trains("k") || trains("v")) ? h : 0);
  bytes += c * N * (input_side && (trains("gate") || trains("up")) ? h : 0);
  bytes += c * N / t * 3 * h;  // q after RoPE, k and v (repeated for GQA): the products' operands
  bytes += c * N / t * (trains("o") ? h : 0);                            // o's input
  bytes += b * double(a.num_heads) / t * s * s * (4 + (c < 4 ? c : 0));  // softmax
  bytes += c * N / t * I * (3 + (trains("down") ? 1 : 0));               // the MLP
  const double copy = c < 4 ? 4 : 0;  // an fp32 copy of a bf16 tensor, where one is made
  for (const auto& p : projections(a)) {
    if (!trains(p.name.c_str())) continue;
    ProjActivations pa;
    pa.tokens = N;
    pa.in_local = p.column ? p.in : p.in / t;
    pa.out_local = p.column ? p.out / t : p.out;
    pa.entries = p.out * p.in / t;
    pa.base_bytes = c;
    pa.copy = copy;
    pa.dropped = in.dropout > 0 ? 5 * N * pa.in_local : 0;  // fp32 output, bool mask
    bytes += in.method->kept(p, double(in.r), pa);
  }
  return bytes;
}

void check(const PlanInputs& in) {
  if (!in.method)
    throw UsageError("the plan has no method's costs", "spartan plan",
                     "give PlanInputs::method (adapters::Method::costs)");
  const LlamaArch& a = in.arch;
  if (in.tp < 1 || in.pp < 1 || in.dp < 1)
    throw UsageError("the layout needs tp, pp and dp of at least 1", "[parallel]",
                     "set positive sizes");
  if (a.num_heads % in.tp != 0 || a.intermediate_size % in.tp != 0 || a.vocab_size % in.tp != 0 ||
      (a.num_kv_heads % in.tp != 0 && in.tp % a.num_kv_heads != 0))
    throw UsageError("tp = " + std::to_string(in.tp) +
                         " does not divide the model's heads, KV "
                         "heads, MLP width and vocabulary",
                     "[parallel] tp", "choose a tp that divides them");
  if (in.pp > a.num_layers)
    throw UsageError("pp = " + std::to_string(in.pp) + " exceeds the " +
                         std::to_string(a.num_layers) + " layers",
                     "[parallel] pp", "use at most one stage a layer");
  if (in.global_batch % (in.micro_batch * in.dp) != 0)
    throw UsageError("optim.global_batch_size is not a multiple of micro_batch_size x dp",
                     "[optim]", "make the global batch a multiple of micro_batch_size x dp");
}

}  // namespace

const StagePlan& Plan::largest() const {
  return *std::max_element(stages.begin(), stages.end(),
                           [](const auto& x, const auto& y) { return x.total() < y.total(); });
}

Plan make_plan(const PlanInputs& in) {
  check(in);
  const LlamaArch& a = in.arch;
  const double c = double(in.base_bytes), t = double(in.tp);
  const double h = double(a.hidden_size), V = double(a.vocab_size);
  const double b = double(in.micro_batch), s = double(in.seq_len);
  Plan plan;
  plan.in = in;
  plan.micro_batches = in.global_batch / (in.micro_batch * in.dp);
  const double M = double(plan.micro_batches);
  plan.tokens_per_step = double(in.global_batch) * s;

  double proj_params = 0;  // of one layer
  for (const auto& p : projections(a)) proj_params += p.out * p.in;
  const double embed = V * h;
  const bool tied = a.tie_word_embeddings;
  plan.base_parameters =
      double(a.num_layers) * (proj_params + 2 * h) + embed + (tied ? 0 : embed) + h;
  const Entries per_layer = layer_entries(in);
  plan.trainable_entries = double(a.num_layers) * per_layer.whole;
  const bool everything = in.method->trains_everything();
  if (everything) plan.trainable_entries = plan.base_parameters;
  plan.activation_per_layer = layer_activations(in);
  // The head keeps the final norm's fp32 copy (in full training also its output and the head's
  // input) and the fp32 log-softmax of the loss over this rank's part of the vocabulary.
  plan.head_kept = 4 * b * s * h + (everything ? 2 * c * b * s * h : 0) + 4 * b * (s - 1) * V / t;
  // What the method's backward pass holds once, at the largest targeted projection, and what it
  // holds for each targeted entry (the listed targets, also where everything trains).
  double largest = 0, listed_entries = 0;
  for (const auto& p : projections(a)) {
    if (targeted(in, p.name)) largest = std::max(largest, p.out * p.in / t);
    if (listed(in, p.name)) listed_entries += p.out * p.in / t;
  }
  const double workspace = in.method->backward_workspace(largest, c);
  const double per_layer_held = in.method->bytes_per_targeted_entry() * listed_entries;

  std::vector<int64_t> sizes = in.stage_layers;
  if (sizes.empty())
    for (int64_t st = 0; st < in.pp; ++st)
      sizes.push_back(a.num_layers / in.pp + (st < a.num_layers % in.pp));
  const double act = c * b * s * h;  // one activation crossing a TP or PP group
  const double bytes_per_entry = 16 - (everything && in.base_bytes == 4 ? 4 : 0);
  int64_t first = 0;
  for (int64_t st = 0; st < in.pp; ++st) {
    StagePlan sp;
    sp.stage = st;
    sp.first_layer = first;
    sp.layers = sizes.at(st);
    first += sp.layers;
    sp.embedding = st == 0;
    sp.head = st == in.pp - 1;
    sp.in_flight = std::min<int64_t>(in.pp - st, plan.micro_batches);
    const double L = double(sp.layers);
    // Base: the projections (dense or 2:4-compressed), the norms, the embedding and the head.
    const double proj_bytes = in.sparse_base ? c / 2 + 0.125 : c;
    sp.base = L * (proj_params / t * proj_bytes + 2 * h * c);
    if (sp.embedding) sp.base += embed / t * c;
    if (sp.head) sp.base += (tied && in.pp == 1 ? 0 : embed / t * c) + h * c;
    // Trainable state.
    sp.trainable_entries = L * per_layer.local;
    if (everything) {
      if (sp.embedding) sp.trainable_entries += embed / t;
      if (sp.head) sp.trainable_entries += (tied && in.pp == 1 ? 0 : embed / t) + h;
    }
    sp.trainable = bytes_per_entry * sp.trainable_entries + L * per_layer_held;
    // Activations: the in-flight micro-batches of 1F1B; with recomputation only each layer's
    // input, and one layer's full set while it is recomputed.
    const double inputs = c * b * s * h * L;
    sp.activations = in.recompute ? double(sp.in_flight) * inputs + plan.activation_per_layer
                                  : double(sp.in_flight) * L * plan.activation_per_layer;
    // Before the first layer nothing trains (a frozen embedding): its input norm keeps nothing.
    if (sp.embedding && !everything) sp.activations -= double(sp.in_flight) * 4 * b * s * h;
    sp.activations += workspace;
    if (sp.head) sp.logits = plan.head_kept + (c + 4) * b * s * V / t;  // logits, their gradient
    const int groups = (in.tp > 1) + (in.pp > 1) + (in.dp > 1);
    sp.buffers = groups ? kGroupBuffers * groups + act : 0;
    sp.allowance = kContext + kSlack * (sp.activations + sp.logits);

    // Traffic. TP, per micro-batch: forward all-reduces after o and down (and the embedding),
    // the vocab-parallel loss's three (b, s-1) fp32 vectors; backward the inputs of attention
    // and the MLP (not the first attention's when nothing before it trains) and the head's.
    if (in.tp > 1) {
      const bool frozen_front = !everything;
      double per_micro = act * 2 * L + act * 2 * L;
      if (sp.embedding) per_micro += act - (frozen_front ? act : 0);
      if (sp.head) per_micro += 3 * b * (s - 1) * 4 + act;
      // The replicated trainables' partial gradients, SoRA's gates broadcast from TP rank 0
      // after the reduction (bit-identical on every rank), and the gradient norm.
      const double partial = 4 * L * (per_layer.replicated + per_layer.gates);
      sp.tp_bytes = M * per_micro + partial + 8;
    }
    // PP: each micro-batch's activation forward and its gradient back over each boundary this
    // stage touches; the loss and the gradient norm summed over the stages.
    if (in.pp > 1) {
      const double boundaries = (sp.embedding ? 0 : 1) + (sp.head ? 0 : 1);
      sp.pp_bytes = 2 * act * M * boundaries + 8 + 8;
    }
    // DP: the gradients of this rank's trainable entries (fp32), SoRA's gates broadcast from
    // replica 0, the loss and the token count.
    if (in.dp > 1) sp.dp_bytes = 4 * (sp.trainable_entries + L * per_layer.gates) + 8 + 8;
    plan.stages.push_back(sp);
  }

  // FLOPs of one step over the whole job: tokens × 2 × (matmul parameters), attention's two
  // products (4·s·h a token a layer, causal positions computed in full as eager attention does).
  const double T = plan.tokens_per_step, Lall = double(a.num_layers);
  const double attention = 4 * T * s * h * Lall;
  double adapted = 0;  // parameters of the targeted projections
  for (const auto& p : projections(a))
    if (targeted(in, p.name)) adapted += p.out * p.in;
  adapted *= Lall;
  const double mm = Lall * proj_params + embed;  // the head's product counts, the lookup not
  const MethodFlops added =
      in.method->flops({T, adapted, plan.trainable_entries, mm, in.dropout > 0});
  plan.flops_forward = 2 * T * mm + attention + added.forward;
  plan.flops_backward = 2 * T * mm + 2 * attention + added.backward;  // through the inputs
  plan.flops_weight_grad = added.weight_grad;
  return plan;
}

double step_seconds(const Plan& plan, double peak_flops, double mfu) {
  const double gpus = double(plan.in.tp * plan.in.pp * plan.in.dp);
  return plan.flops() / (gpus * peak_flops * mfu);
}

double comm_seconds(const Plan& plan, double nvlink_bytes_s, double network_bytes_s) {
  auto ring = [](double bytes, int64_t n) { return n > 1 ? bytes * 2 * (n - 1) / n : 0.0; };
  double worst = 0;
  for (const auto& sp : plan.stages)
    worst = std::max(worst, ring(sp.tp_bytes, plan.in.tp) / nvlink_bytes_s +
                                (sp.pp_bytes + ring(sp.dp_bytes, plan.in.dp)) / network_bytes_s);
  return worst;
}

std::vector<LayoutChoice> suggest_layouts(const PlanInputs& base, int64_t gpus,
                                          int64_t gpus_per_node, double gpu_bytes,
                                          double peak_flops, double mfu, double nvlink_bytes_s,
                                          double network_bytes_s) {
  std::vector<LayoutChoice> out;
  for (int64_t tp = 1; tp <= std::min(gpus, gpus_per_node); tp *= 2)
    for (int64_t pp = 1; pp <= base.arch.num_layers && tp * pp <= gpus; ++pp) {
      if (gpus % (tp * pp) != 0) continue;
      PlanInputs in = base;
      in.tp = tp;
      in.pp = pp;
      in.dp = gpus / (tp * pp);
      in.stage_layers.clear();
      Plan plan;
      try {
        plan = make_plan(in);
      } catch (const UsageError&) {
        continue;  // does not divide the model or the batch
      }
      const double peak = plan.largest().total();
      if (peak > gpu_bytes || plan.micro_batches < pp) continue;
      // 1F1B idles (pp - 1) of (M + pp - 1) micro-batch slots.
      const double M = double(plan.micro_batches);
      const double bubble = (M + double(pp) - 1) / M;
      out.push_back({tp, pp, in.dp, peak, step_seconds(plan, peak_flops, mfu) * bubble,
                     comm_seconds(plan, nvlink_bytes_s, network_bytes_s)});
    }
  std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) {
    return x.step_seconds() != y.step_seconds() ? x.step_seconds() < y.step_seconds()
                                                : x.peak_bytes < y.peak_bytes;
  });
  return out;
}

std::string describe_plan(const Plan& plan, double gpu_bytes, double peak_flops, double mfu) {
  const PlanInputs& in = plan.in;
  std::ostringstream o;
  char line[256];
  auto gb = [](double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f GB", x / 1e9);
    return std::string(buf);
  };
  std::snprintf(
      line, sizeof line,
      "model        %.2fB parameters, %lld layers, hidden %lld, %lld heads (%lld KV), "
      "vocabulary %lld\n",
      plan.base_parameters / 1e9, static_cast<long long>(in.arch.num_layers),
      static_cast<long long>(in.arch.hidden_size), static_cast<long long>(in.arch.num_heads),
      static_cast<long long>(in.arch.num_kv_heads), static_cast<long long>(in.arch.vocab_size));
  o << line;
  std::snprintf(
      line, sizeof line, "method       %s (r %lld), %.2fM trainable entries; base %s %s\n",
      in.method->name().c_str(), static_cast<long long>(in.r), plan.trainable_entries / 1e6,
      in.base_bytes == 2 ? "bf16" : "fp32", in.sparse_base ? "2:4-compressed" : "dense");
  o << line;
  std::snprintf(line, sizeof line,
                "layout       dp %lld x pp %lld x tp %lld = %lld ranks; sequence %lld, "
                "micro-batch %lld, %lld micro-batches a step per replica%s\n",
                static_cast<long long>(in.dp), static_cast<long long>(in.pp),
                static_cast<long long>(in.tp), static_cast<long long>(in.dp * in.pp * in.tp),
                static_cast<long long>(in.seq_len), static_cast<long long>(in.micro_batch),
                static_cast<long long>(plan.micro_batches),
                in.recompute ? ", activations recomputed" : "");
  o << line << "\nmemory per rank (GB)\n";
  std::snprintf(line, sizeof line, "%-8s %7s %7s %9s %11s %7s %8s %9s %8s\n", "stage", "layers",
                "base", "trainable", "activations", "logits", "buffers", "allowance", "total");
  o << line;
  for (const auto& sp : plan.stages) {
    std::snprintf(line, sizeof line, "%-8lld %7lld %7.2f %9.2f %11.2f %7.2f %8.2f %9.2f %8.2f\n",
                  static_cast<long long>(sp.stage), static_cast<long long>(sp.layers),
                  sp.base / 1e9, sp.trainable / 1e9, sp.activations / 1e9, sp.logits / 1e9,
                  sp.buffers / 1e9, sp.allowance / 1e9, sp.total() / 1e9);
    o << line;
  }
  std::snprintf(line, sizeof line,
                "activations of one layer and micro-batch: %s (%lld in flight on stage 0)\n",
                gb(plan.activation_per_layer).c_str(),
                static_cast<long long>(plan.stages.front().in_flight));
  o << line << "\ntraffic per step and rank (payload)\n";
  for (const auto& sp : plan.stages) {
    std::snprintf(line, sizeof line, "stage %-3lld tp %s, pp %s, dp %s\n",
                  static_cast<long long>(sp.stage), gb(sp.tp_bytes).c_str(),
                  gb(sp.pp_bytes).c_str(), gb(sp.dp_bytes).c_str());
    o << line;
  }
  const double secs = step_seconds(plan, peak_flops, mfu);
  std::snprintf(line, sizeof line,
                "\ncompute per step: %.3g PFLOP (forward %.3g, backward %.3g, weight gradients "
                "%.3g)\nat %.0f%% MFU of %.0f TFLOP/s a GPU: %.2f s a step, %.0f tokens/s\n",
                plan.flops() / 1e15, plan.flops_forward / 1e15, plan.flops_backward / 1e15,
                plan.flops_weight_grad / 1e15, 100 * mfu, peak_flops / 1e12, secs,
                plan.tokens_per_step / secs);
  o << line;
  const StagePlan& top = plan.largest();
  const double margin = gpu_bytes - top.total();
  std::snprintf(line, sizeof line, "verdict: %s on %s GPUs: stage %lld needs %s, margin %s\n",
                margin >= 0 ? "fits" : "DOES NOT FIT", gb(gpu_bytes).c_str(),
                static_cast<long long>(top.stage), gb(top.total()).c_str(), gb(margin).c_str());
  o << line;
  return o.str();
}

}  // namespace spartan::model
