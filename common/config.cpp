#include "common/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>

#include "common/error.h"

namespace spartan {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// What a value must satisfy beyond its type.
struct Rule {
  double lo = -kInf, hi = kInf;
  bool lo_open = false, hi_open = false;
  std::vector<std::string> choices;  // for strings and string arrays

  std::string describe() const {
    if (!choices.empty()) {
      std::string s;
      for (const auto& c : choices) s += (s.empty() ? "" : " | ") + c;
      return s;
    }
    std::ostringstream o;
    if (lo > -kInf && hi < kInf)
      o << (lo_open ? "(" : "[") << lo << ", " << hi << (hi_open ? ")" : "]");
    else if (lo > -kInf)
      o << (lo_open ? "> " : ">= ") << lo;
    else if (hi < kInf)
      o << (hi_open ? "< " : "<= ") << hi;
    return o.str();
  }
  bool admits(double x) const {
    if (!std::isfinite(x)) return false;  // nan and ±inf are no setting of any key
    if (lo_open ? !(x > lo) : !(x >= lo)) return false;
    if (hi_open ? !(x < hi) : !(x <= hi)) return false;
    return true;
  }
};
Rule any() { return {}; }
Rule at_least(double lo) {
  Rule r;
  r.lo = lo;
  return r;
}
Rule above(double lo) {
  Rule r;
  r.lo = lo;
  r.lo_open = true;
  return r;
}
Rule between(double lo, double hi) {
  Rule r;
  r.lo = lo;
  r.hi = hi;
  return r;
}
Rule unit_open_right(double lo, double hi) {
  Rule r = between(lo, hi);
  r.hi_open = true;
  return r;
}
Rule open(double lo, double hi) {
  Rule r = between(lo, hi);
  r.lo_open = r.hi_open = true;
  return r;
}
Rule one_of(std::vector<std::string> c) {
  Rule r;
  r.choices = std::move(c);
  return r;
}
template <class E>
Rule options() {
  return one_of(option_names<E>());
}

const std::vector<std::string> kProjections = {"q", "k", "v", "o", "gate", "up", "down"};

}  // namespace

const std::vector<std::string> kAdapterMethods = {
    "lora",      "sora",           "spp",    "ia3",    "houlsby",
    "compacter", "tiny_attention", "prompt", "prefix", "full"};

namespace {

// The schema: every section and key, in the order `--explain` and `to_toml` print them.
// V provides section(name, doc) and operator()(key, field&, doc, rule).
template <class V>
void schema(V& v, Config& c) {
  v.section("run", "what the run is called and where it writes");
  v("run.name", c.run.name, "name of the run; artefacts go under <output_dir>/<name>", any());
  v("run.output_dir", c.run.output_dir, "folder that holds run folders", any());
  v("run.seed", c.run.seed, "seed for initialisation, dropout and data order", at_least(0));
  v("run.log_every", c.run.log_every, "rank 0 prints a progress line every k optimizer steps",
    at_least(1));
  v("run.tensorboard", c.run.tensorboard,
    "write TensorBoard event files under <run>/tb as training goes (`tensorboard --logdir runs`)",
    any());
  v("run.memory_limit_gb", c.run.memory_limit_gb,
    "memory one rank may use, in GB; 0 = the machine's (its cgroup limit or physical memory) "
    "shared by the ranks on it. A run estimated to need more is refused before it loads",
    at_least(0));
  v("run.device", c.run.device,
    "where each rank computes: cuda (the GPU of its local rank), cpu, or auto (cuda where a GPU "
    "is visible)",
    options<DeviceKind>());

  v.section("model", "the frozen base model");
  v("model.path", c.model.path, "Hugging Face model folder (config.json, *.safetensors)", any());
  v("model.dtype", c.model.dtype,
    "dtype of the frozen base weights in memory; auto = bf16 on a GPU, fp32 on the CPU",
    options<Precision>());
  v("model.compute_dtype", c.model.compute_dtype,
    "dtype the products of training and evaluation run in (autocast; trainable parameters, "
    "optimizer state, loss, norms and SoRA's gate step stay fp32); auto = bf16 on a GPU, fp32 on "
    "the CPU",
    options<Precision>());

  v.section("model.init", "architecture of a new model made by `spartan model init`");
  v("model.init.vocab_size", c.model.init.vocab_size, "vocabulary size", at_least(1));
  v("model.init.hidden_size", c.model.init.hidden_size, "model width", at_least(1));
  v("model.init.intermediate_size", c.model.init.intermediate_size, "SwiGLU MLP width",
    at_least(1));
  v("model.init.num_layers", c.model.init.num_layers, "decoder layers", at_least(1));
  v("model.init.num_heads", c.model.init.num_heads, "attention heads", at_least(1));
  v("model.init.num_kv_heads", c.model.init.num_kv_heads,
    "key/value heads (grouped-query attention; = num_heads for multi-head)", at_least(1));
  v("model.init.max_position_embeddings", c.model.init.max_position_embeddings,
    "longest sequence the model is meant for", at_least(1));
  v("model.init.rms_norm_eps", c.model.init.rms_norm_eps, "RMSNorm epsilon", above(0));
  v("model.init.rope_theta", c.model.init.rope_theta, "rotary embedding base", above(0));
  v("model.init.initializer_range", c.model.init.initializer_range,
    "std of the normal initialisation of linears and embeddings", above(0));
  v("model.init.tie_word_embeddings", c.model.init.tie_word_embeddings,
    "LM head shares the embedding matrix", any());

  v.section("parallel", "process grid: world = dp x pp x tp, tp fastest, then dp, then pp");
  v("parallel.tp", c.parallel.tp, "tensor-parallel size (splits heads, MLP and vocabulary)",
    at_least(1));
  v("parallel.pp", c.parallel.pp, "pipeline-parallel size (splits layers into stages)",
    at_least(1));
  v("parallel.dp", c.parallel.dp, "data-parallel size (replicas that split each batch)",
    at_least(1));
  v("parallel.pp_split", c.parallel.pp_split,
    "layers per pipeline stage, one entry per stage; empty = even split", at_least(1));
  v("parallel.backend", c.parallel.backend, "communicator: auto picks NCCL for CUDA tensors",
    options<Backend>());
  v("parallel.timeout_s", c.parallel.timeout_s,
    "seconds a rank may wait in one collective before the job ends with an error (a rank that "
    "died or hangs); 0 = wait forever",
    at_least(0));
  v("parallel.dp_overlap", c.parallel.dp_overlap,
    "with dp > 1, start each bucket's gradient sum over DP during the backward pass, as soon as "
    "its gradients are complete (false: all after the backward pass)",
    any());

  v.section("adapter", "the trainable method on top of the frozen base");
  v("adapter.method", c.adapter.method, "PEFT method (full = all base weights trainable)",
    one_of(kAdapterMethods));
  v("adapter.targets", c.adapter.targets, "projections the method attaches to",
    one_of(kProjections));
  v("adapter.r", c.adapter.r, "rank (LoRA, SoRA: r_max; SPP: rows of W_alpha)", at_least(1));
  v("adapter.alpha", c.adapter.alpha, "scale numerator: s = alpha / r", above(0));
  v("adapter.dropout", c.adapter.dropout, "dropout on the adapter's input", unit_open_right(0, 1));
  v("adapter.merge", c.adapter.merge,
    "LoRA/SoRA merge: dense, or masked with the base's zero pattern (LoRA*); full: masked keeps "
    "the base's zeros in the targets through training",
    options<MergeForm>());

  v.section("adapter.sora", "SoRA gates (Ding et al. 2023)");
  v("adapter.sora.lambda2", c.adapter.sora.lambda2, "gate threshold xi of the proximal step",
    at_least(0));
  v("adapter.sora.lambda1", c.adapter.sora.lambda1,
    "weight of the L1 term on the gates in the loss (official sparse_lambda)", at_least(0));
  v("adapter.sora.threshold", c.adapter.sora.threshold,
    "proximal step: official code's three lines, textbook soft threshold, or xi scaled by lr",
    options<GateThreshold>());
  v("adapter.sora.adam", c.adapter.sora.adam,
    "gate AdamW: hf = the official SparseAdamW's (eps on the uncorrected second moment, bias "
    "corrections in the step size), torch = torch.optim.AdamW's",
    options<GateAdam>());
  v("adapter.sora.schedule", c.adapter.sora.schedule, "how xi rises to max_lambda over training",
    options<XiScheduleKind>());
  v("adapter.sora.max_lambda", c.adapter.sora.max_lambda, "last xi of the schedule", at_least(0));
  v("adapter.sora.lambda_num", c.adapter.sora.lambda_num, "number of xi values in the schedule",
    at_least(1));
  v("adapter.sora.gate_lr", c.adapter.sora.gate_lr, "learning rate of the gates; 0 = optim.lr",
    at_least(0));

  v.section("adapter.spp", "SPP, sparsity-preserving adapter (Lu et al. 2024)");
  v("adapter.spp.form", c.adapter.spp.form,
    "effective: one product with W_eff; blocked: the paper's eq. 7 without W_eff",
    options<SppForm>());
  v("adapter.spp.recompute_weight", c.adapter.spp.recompute_weight,
    "effective form: rebuild the m×n weight in the backward pass instead of keeping it for every "
    "projection and in-flight micro-batch (about 1.7 GB a layer for LLaMA-2-70B at tp 8, see "
    "`spartan plan`); false keeps it (plain autograd): more memory, and no faster on the CPU "
    "step benchmark",
    any());

  v.section("adapter.prompt", "prompt tuning (Lester et al. 2021)");
  v("adapter.prompt.num_virtual_tokens", c.adapter.prompt.num_virtual_tokens,
    "learned vectors in front of every sequence", at_least(1));

  v.section("adapter.prefix", "prefix tuning (Li & Liang 2021)");
  v("adapter.prefix.num_virtual_tokens", c.adapter.prefix.num_virtual_tokens,
    "key/value vectors in front of every layer's", at_least(1));
  v("adapter.prefix.projection", c.adapter.prefix.projection,
    "train through the reparameterisation MLP (dropped at save)", any());
  v("adapter.prefix.encoder_hidden_size", c.adapter.prefix.encoder_hidden_size,
    "width of that MLP; 0 = n_kv_heads x head_dim", at_least(0));

  v.section("adapter.bottleneck", "Houlsby adapter and Compacter (after attention and FFN)");
  v("adapter.bottleneck.size", c.adapter.bottleneck.size, "width m of the bottleneck", at_least(1));

  v.section("adapter.compacter", "Compacter (Mahabadi et al. 2021): PHM layers");
  v("adapter.compacter.n", c.adapter.compacter.n,
    "Kronecker factors per PHM layer (A_i: n x n, shared by every layer)", at_least(1));
  v("adapter.compacter.rank", c.adapter.compacter.rank, "rank of each factor B_i = s_i t_i",
    at_least(1));

  v.section("adapter.tiny_attention", "tiny-attention adapter (Zhao et al. 2022)");
  v("adapter.tiny_attention.heads", c.adapter.tiny_attention.heads, "attention heads", at_least(1));
  v("adapter.tiny_attention.head_dim", c.adapter.tiny_attention.head_dim, "dimension of each head",
    at_least(1));

  v.section("data", "training data");
  v("data.path", c.data.path, "Alpaca JSON/JSONL, {\"text\": ...} JSONL or plain text", any());
  v("data.format", c.data.format, "file format; auto guesses from the content",
    one_of({"auto", "alpaca", "text", "jsonl_text"}));
  v("data.tokenizer", c.data.tokenizer, "sentencepiece tokenizer.model; empty = model folder's",
    any());
  v("data.seq_len", c.data.seq_len, "tokens per training sequence", at_least(2));
  v("data.pack", c.data.pack, "pack several records into one sequence (else pad)", any());
  v("data.shuffle", c.data.shuffle, "shuffle records each epoch (seeded by run.seed)", any());
  v("data.held_out_fraction", c.data.held_out_fraction,
    "fraction of records kept out of training for evaluation", unit_open_right(0, 1));

  v.section("optim", "optimizer, schedule and batch");
  v("optim.lr", c.optim.lr, "peak learning rate", above(0));
  v("optim.weight_decay", c.optim.weight_decay, "decoupled (AdamW) weight decay", at_least(0));
  v("optim.beta1", c.optim.beta1, "AdamW beta1", unit_open_right(0, 1));
  v("optim.beta2", c.optim.beta2, "AdamW beta2", unit_open_right(0, 1));
  v("optim.eps", c.optim.eps, "AdamW epsilon", above(0));
  v("optim.schedule", c.optim.schedule, "learning-rate decay after warmup",
    options<LrScheduleKind>());
  v("optim.warmup_ratio", c.optim.warmup_ratio, "fraction of steps with linear warmup",
    unit_open_right(0, 1));
  v("optim.min_lr_ratio", c.optim.min_lr_ratio, "final lr as a fraction of optim.lr",
    between(0, 1));
  v("optim.grad_clip", c.optim.grad_clip, "global gradient-norm clip; 0 = off", at_least(0));
  v("optim.micro_batch_size", c.optim.micro_batch_size, "sequences per micro-batch per rank",
    at_least(1));
  v("optim.global_batch_size", c.optim.global_batch_size,
    "sequences per optimizer step over all ranks (micro_batch_size x dp x accumulation)",
    at_least(1));
  v("optim.epochs", c.optim.epochs, "passes over the training data", at_least(1));
  v("optim.max_steps", c.optim.max_steps, "stop after this many steps; 0 = run for epochs",
    at_least(0));
  v("optim.max_bad_steps", c.optim.max_bad_steps,
    "stop after this many NaN/Inf losses in a row (each is skipped)", at_least(1));

  v.section("train", "how a step is run");
  v("train.recompute", c.train.recompute,
    "activation recomputation: layer = keep only each decoder layer's input and run the layer "
    "again in the backward pass (less memory, about a third more compute); none = keep every "
    "activation",
    options<Recompute>());

  v.section("checkpoint", "sharded HDF5 checkpoints");
  v("checkpoint.every", c.checkpoint.every, "save every k steps; 0 = only at the end", at_least(0));
  v("checkpoint.keep", c.checkpoint.keep, "newest checkpoints kept", at_least(1));

  v.section("prune", "`spartan prune`: dense model -> pruned model");
  v("prune.method", c.prune.method, "pruning criterion", options<PruneMethod>());
  v("prune.sparsity", c.prune.sparsity, "fraction of zeros (unstructured pattern)", open(0, 1));
  v("prune.pattern", c.prune.pattern, "unstructured, or N:M along the input dimension (e.g. 2:4)",
    any());
  v("prune.targets", c.prune.targets, "projections to prune", one_of(kProjections));
  v("prune.calib_samples", c.prune.calib_samples, "calibration sequences of data.seq_len tokens",
    at_least(1));
  v("prune.blocksize", c.prune.blocksize, "SparseGPT column block size", at_least(1));
  v("prune.percdamp", c.prune.percdamp, "SparseGPT dampening, fraction of mean Hessian diagonal",
    at_least(0));
  v("prune.out", c.prune.out, "output model folder", any());

  v.section("eval", "perplexity evaluation");
  v("eval.path", c.eval.path, "held-out data; empty = the held-out part of data.path", any());
  v("eval.stride", c.eval.stride, "window stride in tokens; 0 = data.seq_len (no overlap)",
    at_least(0));
  v("eval.every", c.eval.every, "evaluate every k steps; 0 = at the end only", at_least(0));
  v("eval.max_batches", c.eval.max_batches, "batches evaluated; 0 = all", at_least(0));
}

// ---- value helpers ----------------------------------------------------------------------------

template <class T>
const char* type_name() {
  static_assert(std::is_enum_v<T>, "a configuration field of a type the schema does not know");
  return "string";  // an option's name
}
template <>
const char* type_name<bool>() {
  return "bool";
}
template <>
const char* type_name<int64_t>() {
  return "integer";
}
template <>
const char* type_name<double>() {
  return "float";
}
template <>
const char* type_name<std::string>() {
  return "string";
}
template <>
const char* type_name<std::vector<std::string>>() {
  return "array of strings";
}
template <>
const char* type_name<std::vector<int64_t>>() {
  return "array of integers";
}

// A TOML basic string.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (ch < 0x20 || ch == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}
std::string show(bool b) { return b ? "true" : "false"; }
std::string show(int64_t i) { return std::to_string(i); }
// The shortest decimal that reads back to the same double, always with a '.' or exponent so
// that TOML reads it as a float.
std::string show(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}
std::string show(const std::string& s) { return quote(s); }
template <class E, std::enable_if_t<std::is_enum_v<E>, int> = 0>
std::string show(E value) {
  return quote(name_of(value));
}
template <class T>
std::string show(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + show(v[i]);
  return s + "]";
}

std::string node_type(const toml::node& n) {
  std::ostringstream o;
  o << n.type();
  return o.str();
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Where a node came from: its own source (the file, or the --set that gave it), else `file`.
KeySource source_of(const toml::source_region& r, const std::string& file) {
  return KeySource{r.path ? *r.path : file, static_cast<int64_t>(r.begin.line),
                   static_cast<int64_t>(r.begin.column)};
}

// ---- the visitors -----------------------------------------------------------------------------

// Collects the known sections and keys.
struct KeyLister {
  std::vector<std::string> sections, keys;
  void section(const char* name, const char*) { sections.push_back(name); }
  template <class T>
  void operator()(const char* key, T&, const char*, const Rule&) {
    keys.push_back(key);
  }
};

// Reads values from a parsed TOML table into the config, checking type and rule.
struct Reader {
  const toml::table& root;
  Config& config;
  const std::map<std::string, KeySource>& overridden;  // keys set by --set, and which one

  void section(const char*, const char*) {}

  template <class T>
  void operator()(const char* key, T& field, const char*, const Rule& rule) {
    toml::node_view<const toml::node> view = root.at_path(key);
    if (!view) return;
    const toml::node& node = *view.node();
    auto o = overridden.find(key);
    KeySource src = o != overridden.end() ? o->second : source_of(node.source(), config.file);
    config.sources[key] = src;
    read(key, node, field, rule, src);
  }

  [[noreturn]] void type_error(const char* key, const toml::node& node, const char* want,
                               const KeySource& src) {
    throw UsageError(std::string("key '") + key + "' must be " + want + ", got " + node_type(node),
                     src.str(), "fix the value's type (see `spartan config --explain`)");
  }
  void check_choice(const char* key, const std::string& value, const Rule& rule,
                    const KeySource& src) {
    if (rule.choices.empty()) return;
    if (std::find(rule.choices.begin(), rule.choices.end(), value) == rule.choices.end())
      throw UsageError(std::string("key '") + key + "' = " + quote(value) + " is not allowed",
                       src.str(), "use one of: " + rule.describe());
  }
  void check_range(const char* key, double value, const std::string& text, const Rule& rule,
                   const KeySource& src) {
    if (!rule.admits(value))
      throw UsageError(std::string("key '") + key + "' = " + text + " is out of range", src.str(),
                       "use a value " + rule.describe());
  }

  void read(const char* key, const toml::node& n, bool& f, const Rule&, const KeySource& s) {
    if (!n.is_boolean()) type_error(key, n, "a bool", s);
    f = n.as_boolean()->get();
  }
  void read(const char* key, const toml::node& n, int64_t& f, const Rule& r, const KeySource& s) {
    if (!n.is_integer()) type_error(key, n, "an integer", s);
    f = n.as_integer()->get();
    check_range(key, static_cast<double>(f), show(f), r, s);
  }
  void read(const char* key, const toml::node& n, double& f, const Rule& r, const KeySource& s) {
    if (n.is_integer())
      f = static_cast<double>(n.as_integer()->get());
    else if (n.is_floating_point())
      f = n.as_floating_point()->get();
    else
      type_error(key, n, "a number", s);
    check_range(key, f, show(f), r, s);
  }
  void read(const char* key, const toml::node& n, std::string& f, const Rule& r,
            const KeySource& s) {
    if (!n.is_string()) type_error(key, n, "a string", s);
    f = n.as_string()->get();
    check_choice(key, f, r, s);
  }
  template <class E, std::enable_if_t<std::is_enum_v<E>, int> = 0>
  void read(const char* key, const toml::node& n, E& f, const Rule& r, const KeySource& s) {
    std::string name;
    read(key, n, name, r, s);  // a string among the rule's choices: the option's names
    f = *option_named<E>(name);
  }
  void read(const char* key, const toml::node& n, std::vector<std::string>& f, const Rule& r,
            const KeySource& s) {
    if (!n.is_array()) type_error(key, n, "an array of strings", s);
    f.clear();
    for (const toml::node& e : *n.as_array()) {
      KeySource es = overridden.count(key) ? s : source_of(e.source(), config.file);
      if (!e.is_string()) type_error(key, e, "an array of strings", es);
      f.push_back(e.as_string()->get());
      check_choice(key, f.back(), r, es);
    }
  }
  void read(const char* key, const toml::node& n, std::vector<int64_t>& f, const Rule& r,
            const KeySource& s) {
    if (!n.is_array()) type_error(key, n, "an array of integers", s);
    f.clear();
    for (const toml::node& e : *n.as_array()) {
      KeySource es = overridden.count(key) ? s : source_of(e.source(), config.file);
      if (!e.is_integer()) type_error(key, e, "an array of integers", es);
      f.push_back(e.as_integer()->get());
      check_range(key, static_cast<double>(f.back()), show(f.back()), r, es);
    }
  }
};

// Writes the resolved config as TOML text.
struct Writer {
  std::ostringstream out;
  std::string current;
  void section(const char* name, const char*) {
    out << (current.empty() ? "" : "\n") << "[" << name << "]\n";
    current = name;
  }
  template <class T>
  void operator()(const char* key, T& field, const char*, const Rule&) {
    out << (key + current.size() + 1) << " = " << show(field) << "\n";
  }
};

// Prints every key with type, default, allowed values and meaning.
struct Explainer {
  std::ostringstream out;
  std::string current;
  void section(const char* name, const char* doc) {
    out << (current.empty() ? "" : "\n") << "[" << name << "]  " << doc << "\n";
    current = name;
  }
  template <class T>
  void operator()(const char* key, T& field, const char* doc, const Rule& rule) {
    std::string allowed = rule.describe();
    out << "  " << std::left << std::setw(26) << (key + current.size() + 1) << std::setw(18)
        << type_name<T>() << "default " << show(field);
    if (!allowed.empty()) out << "  (" << allowed << ")";
    out << "\n      " << doc << "\n";
  }
};

const KeyLister& known_keys() {
  static const KeyLister lister = [] {
    KeyLister l;
    Config c;
    schema(l, c);
    return l;
  }();
  return lister;
}

std::string suggestion(const std::string& key) {
  const auto& keys = known_keys().keys;
  std::string best;
  size_t best_d = 4;  // suggest only close matches
  for (const auto& k : keys) {
    size_t d = edit_distance(key, k);
    if (d < best_d) best_d = d, best = k;
  }
  return best.empty() ? "see `spartan config --explain` for the keys"
                      : "did you mean '" + best + "'? (`spartan config --explain` lists the keys)";
}

// Every key and table in the file must be one the schema knows.
void reject_unknown(const toml::table& table, const std::string& prefix, const std::string& file,
                    const std::map<std::string, KeySource>& overridden) {
  const auto& lister = known_keys();
  for (auto&& [k, node] : table) {
    std::string dotted =
        prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    bool is_section =
        std::find(lister.sections.begin(), lister.sections.end(), dotted) != lister.sections.end();
    bool is_key = std::find(lister.keys.begin(), lister.keys.end(), dotted) != lister.keys.end();
    if (node.is_table() && is_section) {
      reject_unknown(*node.as_table(), dotted, file, overridden);
    } else if (is_section) {
      throw UsageError("'" + dotted + "' is a section and must be a table",
                       source_of(k.source(), file).str(), "write it as [" + dotted + "]");
    } else if (!is_key) {
      auto o = overridden.find(dotted);
      throw UsageError(
          "unknown " + std::string(node.is_table() ? "section" : "key") + " '" + dotted + "'",
          o != overridden.end() ? o->second.str() : source_of(k.source(), file).str(),
          suggestion(dotted));
    }
  }
}

[[noreturn]] void inconsistent(const Config& c, const std::string& key, const std::string& what,
                               const std::string& todo) {
  throw UsageError(what, c.where(key) + " (key '" + key + "')", todo);
}

// Checks that involve more than one key.
void validate(const Config& c) {
  if (c.model.compute_dtype == Precision::fp16)
    inconsistent(c, "model.compute_dtype",
                 "fp16 products need a scaled loss against underflowing gradients, which Spartan "
                 "does not do",
                 "compute in bf16 (the base may still be held in fp16)");
  const auto& p = c.parallel;
  if (!p.pp_split.empty() && static_cast<int64_t>(p.pp_split.size()) != p.pp)
    inconsistent(c, "parallel.pp_split",
                 "parallel.pp_split has " + std::to_string(p.pp_split.size()) +
                     " entries but parallel.pp = " + std::to_string(p.pp),
                 "give one layer count per pipeline stage, or leave it empty for an even split");
  const auto& o = c.optim;
  if (o.global_batch_size % (o.micro_batch_size * p.dp) != 0)
    inconsistent(c, "optim.global_batch_size",
                 "optim.global_batch_size = " + std::to_string(o.global_batch_size) +
                     " is not a multiple of micro_batch_size x dp = " +
                     std::to_string(o.micro_batch_size) + " x " + std::to_string(p.dp),
                 "make the global batch a multiple of micro_batch_size x parallel.dp");
  // Each DP replica's pipeline runs global / (micro_batch_size x dp) micro-batches per step.
  const int64_t micro_batches = o.global_batch_size / (o.micro_batch_size * p.dp);
  if (p.pp > 1 && micro_batches < p.pp)
    inconsistent(c, "optim.global_batch_size",
                 "optim.global_batch_size = " + std::to_string(o.global_batch_size) + " gives " +
                     std::to_string(micro_batches) +
                     " micro-batches per step and pipeline, "
                     "fewer than parallel.pp = " +
                     std::to_string(p.pp),
                 "use global_batch_size >= pp x micro_batch_size x dp so the 1F1B pipeline "
                 "can fill");
  for (const char* key : {"adapter.targets", "prune.targets"}) {
    const auto& t = std::string(key) == "adapter.targets" ? c.adapter.targets : c.prune.targets;
    std::set<std::string> seen(t.begin(), t.end());
    if (t.empty() || seen.size() != t.size())
      inconsistent(c, key, std::string(key) + " is empty or names a projection twice",
                   "list each projection once, from q, k, v, o, gate, up, down");
  }
  const auto& m = c.model.init;
  if (m.hidden_size % m.num_heads != 0 || (m.hidden_size / m.num_heads) % 2 != 0)
    inconsistent(c, "model.init.num_heads",
                 "model.init.hidden_size = " + std::to_string(m.hidden_size) +
                     " does not split into " + std::to_string(m.num_heads) + " heads of even size",
                 "choose num_heads so that hidden_size / num_heads is an even integer");
  if (m.num_heads % m.num_kv_heads != 0)
    inconsistent(c, "model.init.num_kv_heads",
                 "model.init.num_heads = " + std::to_string(m.num_heads) +
                     " is not a multiple of num_kv_heads = " + std::to_string(m.num_kv_heads),
                 "choose num_kv_heads dividing num_heads");
  if (c.prune.pattern != "unstructured") {
    int n = 0, mm = 0;
    char colon = 0, extra = 0;
    std::istringstream in(c.prune.pattern);
    bool ok = (in >> n >> colon >> mm) && colon == ':' && !(in >> extra) && n > 0 && mm > 0;
    if (!ok || n >= mm)
      inconsistent(c, "prune.pattern",
                   "prune.pattern = " + quote(c.prune.pattern) +
                       " is neither unstructured nor N:M "
                       "with 0 < N < M",
                   "write \"unstructured\" or e.g. \"2:4\"");
  }
  if (c.eval.stride > c.data.seq_len)
    inconsistent(c, "eval.stride",
                 "eval.stride = " + std::to_string(c.eval.stride) +
                     " exceeds data.seq_len = " + std::to_string(c.data.seq_len),
                 "use a stride no longer than the window (data.seq_len)");
}

}  // namespace

std::string KeySource::str() const {
  if (line == 0) return file;  // not from a file: a --set
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string Config::where(const std::string& dotted_key) const {
  auto it = sources.find(dotted_key);
  if (it != sources.end()) return it->second.str();
  return file + " (default, key not set)";
}

namespace {

// Applies one `section.key=value` override to the parsed table. The value is read as a TOML
// value (42, 0.5, true, "text", ["q", "v"]); anything that does not parse is taken as a string,
// so `--set prune.method=wanda` works without shell quoting.
void apply_override(toml::table& root, const std::string& assignment,
                    std::map<std::string, KeySource>& overridden) {
  const auto eq = assignment.find('=');
  const std::string where = "--set " + assignment;
  if (eq == std::string::npos || eq == 0)
    throw UsageError("override '" + assignment + "' is not section.key=value", "command line",
                     "write e.g. --set optim.lr=1e-4");
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  toml::table snippet;
  try {
    snippet = toml::parse("value = " + value, where);
  } catch (const toml::parse_error&) {
    snippet = toml::parse("value = " + quote(value), where);
  }
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  toml::table* table = &root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* next = table->get(parts[i]);
    if (!next) next = &table->insert_or_assign(parts[i], toml::table{}).first->second;
    if (!next->is_table())
      throw UsageError("override '" + key + "' goes through '" + parts[i] + "', which is a value",
                       where, "override a key inside a section, e.g. optim.lr");
    table = next->as_table();
  }
  table->insert_or_assign(parts.back(), *snippet.get("value"));
  overridden[key] = KeySource{where, 0, 0};
}

Config parse_table(toml::table& table, const std::string& source_name,
                   const std::map<std::string, KeySource>& overridden) {
  Config c;
  c.file = source_name;
  reject_unknown(table, "", source_name, overridden);
  Reader reader{table, c, overridden};
  schema(reader, c);
  validate(c);
  return c;
}

}  // namespace

Config parse_config(const std::string& text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  toml::table table;
  try {
    table = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    throw UsageError("TOML syntax error: " + std::string(e.description()),
                     source_of(e.source(), source_name).str(), "fix the file's syntax");
  }
  std::map<std::string, KeySource> overridden;
  for (const auto& o : overrides) apply_override(table, o, overridden);
  return parse_table(table, source_name, overridden);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw UsageError("the config path is a folder, not a TOML file", path,
                     "pass the configuration file itself");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot read config file", path, "check the path and its permissions");
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_config(buf.str(), path, overrides);
}

void validate_against_model(const Config& c, const ModelShape& s) {
  const int64_t tp = c.parallel.tp;
  auto fail = [&](const std::string& key, const std::string& what, const std::string& todo) {
    throw UsageError(what + " (model shape from " + s.origin + ")",
                     c.where(key) + " (key '" + key + "')", todo);
  };
  if (s.num_heads % tp != 0)
    fail("parallel.tp",
         "parallel.tp = " + std::to_string(tp) + " does not divide the " +
             std::to_string(s.num_heads) + " attention heads",
         "choose a tensor-parallel size that divides the number of heads");
  if (s.num_kv_heads % tp != 0 && tp % s.num_kv_heads != 0)
    fail("parallel.tp",
         "parallel.tp = " + std::to_string(tp) + " and the " + std::to_string(s.num_kv_heads) +
             " KV heads neither divide each other",
         "choose tp dividing num_kv_heads, or a multiple of it (KV heads are then replicated)");
  if (s.vocab_size % tp != 0)
    fail("parallel.tp",
         "parallel.tp = " + std::to_string(tp) + " does not divide the vocabulary of " +
             std::to_string(s.vocab_size),
         "choose a tensor-parallel size that divides the vocabulary size");
  if (s.num_layers < c.parallel.pp)
    fail("parallel.pp",
         "parallel.pp = " + std::to_string(c.parallel.pp) + " exceeds the " +
             std::to_string(s.num_layers) + " layers",
         "use at most one pipeline stage per layer");
  if (!c.parallel.pp_split.empty()) {
    int64_t sum = 0;
    for (int64_t n : c.parallel.pp_split) sum += n;
    if (sum != s.num_layers)
      fail("parallel.pp_split",
           "parallel.pp_split sums to " + std::to_string(sum) + " layers, the model has " +
               std::to_string(s.num_layers),
           "make the stage sizes add up to the number of layers");
  }
}

std::string to_toml(const Config& config) {
  Writer w;
  Config copy = config;
  schema(w, copy);
  return w.out.str();
}

std::string explain_config() {
  Explainer e;
  Config defaults;
  schema(e, defaults);
  return e.out.str();
}

}  // namespace spartan
