// The run configuration: one TOML file, one typed struct per section.
//
// Defaults live here, in the member initialisers, and nowhere else. The schema (key names, types,
// documentation, allowed values) lives in config.cpp in one function that visits every field; the
// reader, the writer and `spartan config --explain` all go through it, so they cannot disagree.
//
// Errors name the file, line and key:
//   spartan: error: unknown key 'optim.lrr', c.toml:12:1, see `spartan config --explain` for the
//   keys
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace spartan {

// Options with a fixed set of values are enums, parsed once when the configuration is read. In
// files, on the command line and in messages they are their names (name_of, option_named): each
// enum's OptionNames, beside it, lists them in the enum's order.
template <class E>
struct OptionNames;

enum class MergeForm { dense, masked };  // adapter.merge
template <>
struct OptionNames<MergeForm> {
  static inline const std::vector<std::string> names{"dense", "masked"};
};
enum class SppForm { effective, blocked };  // adapter.spp.form
template <>
struct OptionNames<SppForm> {
  static inline const std::vector<std::string> names{"effective", "blocked"};
};
enum class GateThreshold { official, soft, lr_scaled };  // adapter.sora.threshold
template <>
struct OptionNames<GateThreshold> {
  static inline const std::vector<std::string> names{"official", "soft", "lr_scaled"};
};
enum class GateAdam { hf, torch };  // adapter.sora.adam
template <>
struct OptionNames<GateAdam> {
  static inline const std::vector<std::string> names{"hf", "torch"};
};
enum class XiScheduleKind { none, linear, log_linear, exp_linear };  // adapter.sora.schedule
template <>
struct OptionNames<XiScheduleKind> {
  static inline const std::vector<std::string> names{"none", "linear", "log_linear", "exp_linear"};
};
enum class LrScheduleKind { cosine, linear, constant };  // optim.schedule
template <>
struct OptionNames<LrScheduleKind> {
  static inline const std::vector<std::string> names{"cosine", "linear", "constant"};
};
enum class Backend { automatic, mpi, nccl };  // parallel.backend
template <>
struct OptionNames<Backend> {
  static inline const std::vector<std::string> names{"auto", "mpi", "nccl"};
};
enum class PruneMethod { wanda, sparsegpt, magnitude };  // prune.method
template <>
struct OptionNames<PruneMethod> {
  static inline const std::vector<std::string> names{"wanda", "sparsegpt", "magnitude"};
};
enum class Recompute { none, layer };  // train.recompute
template <>
struct OptionNames<Recompute> {
  static inline const std::vector<std::string> names{"none", "layer"};
};
enum class DeviceKind { automatic, cpu, cuda };  // run.device
template <>
struct OptionNames<DeviceKind> {
  static inline const std::vector<std::string> names{"auto", "cpu", "cuda"};
};
enum class Precision { automatic, fp32, bf16, fp16 };  // model.dtype, model.compute_dtype
template <>
struct OptionNames<Precision> {
  static inline const std::vector<std::string> names{"auto", "fp32", "bf16", "fp16"};
};

template <class E>
const std::vector<std::string>& option_names() {
  return OptionNames<E>::names;
}
template <class E>
const std::string& name_of(E value) {
  return option_names<E>().at(static_cast<size_t>(value));
}
// The value called `name`, or none.
template <class E>
std::optional<E> option_named(const std::string& name) {
  const auto& names = option_names<E>();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<E>(i);
  return std::nullopt;
}

struct RunConfig {
  std::string name = "run";  // artefacts go under <output_dir>/<name>
  std::string output_dir = "runs";
  int64_t seed = 1234;
  int64_t log_every = 10;                     // progress line every k optimizer steps
  bool tensorboard = true;                    // TensorBoard event files under <run>/tb
  double memory_limit_gb = 0;                 // one rank's memory; 0 = the machine's share
  DeviceKind device = DeviceKind::automatic;  // auto: cuda where a GPU is visible, else cpu
};

// Architecture of a freshly initialised model (`spartan model init`); an existing model folder
// brings its own in config.json.
struct ModelInitConfig {
  int64_t vocab_size = 2000;
  int64_t hidden_size = 256;
  int64_t intermediate_size = 688;
  int64_t num_layers = 4;
  int64_t num_heads = 8;
  int64_t num_kv_heads = 4;
  int64_t max_position_embeddings = 512;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
};

struct ModelConfig {
  std::string path;  // Hugging Face model folder (config.json + *.safetensors)
  // The precision policy (parallel/runtime.h): the frozen base is held in `dtype`; products run
  // in `compute_dtype`; trainable parameters and optimizer state stay fp32. auto: bf16 on a GPU,
  // fp32 on the CPU.
  Precision dtype = Precision::automatic;
  Precision compute_dtype = Precision::automatic;
  ModelInitConfig init;
};

struct ParallelConfig {
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t dp = 1;
  std::vector<int64_t> pp_split;  // layers per stage; empty = even split
  Backend backend = Backend::automatic;
  double timeout_s = 1800;  // longest wait in one collective; 0 = no limit
  bool dp_overlap = true;   // DP gradient sums start during the backward pass
};

struct SoraConfig {
  double lambda2 = 3e-4;  // gate threshold xi
  double lambda1 = 10.0;  // L1 weight on the gates in the loss (official sparse_lambda)
  GateThreshold threshold = GateThreshold::official;
  GateAdam adam = GateAdam::hf;  // the gate AdamW's form (trainer/optimizer.h)
  XiScheduleKind schedule = XiScheduleKind::none;
  double max_lambda = 10.0;
  int64_t lambda_num = 5;
  double gate_lr = 0.0;  // 0 = optim.lr
};

struct PromptConfig {
  int64_t num_virtual_tokens = 20;
};

struct PrefixConfig {
  int64_t num_virtual_tokens = 20;
  bool projection = true;           // train through the reparameterisation MLP
  int64_t encoder_hidden_size = 0;  // the MLP's width; 0 = n_kv_heads x head_dim
};

struct SppConfig {
  SppForm form = SppForm::effective;
  bool recompute_weight = true;  // effective form: rebuild W_eff in backward, not keep it
};

// Houlsby adapters and Compacter: a bottleneck after the attention and the FFN block.
struct BottleneckConfig {
  int64_t size = 16;  // m: the bottleneck's width
};

struct CompacterConfig {
  int64_t n = 4;     // Kronecker factors; divides hidden size and bottleneck
  int64_t rank = 1;  // rank of each B_i = s_i t_i
};

struct TinyAttentionConfig {
  int64_t heads = 8;
  int64_t head_dim = 1;
};

// The values [adapter] method accepts: the methods adapters/registry.cpp registers (common/ sits
// below adapters/, so the names are listed here too; a test checks that the two agree).
extern const std::vector<std::string> kAdapterMethods;

struct AdapterConfig {
  std::string method = "lora";
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.05;
  MergeForm merge = MergeForm::dense;  // masked: LoRA*, the base's zero pattern applied again
  SoraConfig sora;
  SppConfig spp;
  PromptConfig prompt;
  PrefixConfig prefix;
  BottleneckConfig bottleneck;
  CompacterConfig compacter;
  TinyAttentionConfig tiny_attention;
};

struct DataConfig {
  std::string path;
  std::string format = "auto";  // auto | alpaca | text | jsonl_text
  std::string tokenizer;        // tokenizer.model; empty = the model folder's
  int64_t seq_len = 256;
  bool pack = true;
  bool shuffle = true;
  double held_out_fraction = 0.05;
};

struct OptimConfig {
  double lr = 2e-4;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  LrScheduleKind schedule = LrScheduleKind::cosine;
  double warmup_ratio = 0.03;
  double min_lr_ratio = 0.0;
  double grad_clip = 1.0;  // 0 = off
  int64_t micro_batch_size = 1;
  int64_t global_batch_size = 8;
  int64_t epochs = 1;
  int64_t max_steps = 0;  // 0 = run for `epochs`
  int64_t max_bad_steps = 5;
};

struct TrainConfig {
  Recompute recompute = Recompute::none;  // layer: keep each layer's input, rebuild the rest
};

struct CheckpointConfig {
  int64_t every = 0;  // 0 = only at the end
  int64_t keep = 2;
};

struct PruneConfig {
  PruneMethod method = PruneMethod::wanda;
  double sparsity = 0.5;
  std::string pattern = "unstructured";  // unstructured | N:M
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};
  int64_t calib_samples = 128;
  int64_t blocksize = 128;
  double percdamp = 0.01;
  std::string out;
};

struct EvalConfig {
  std::string path;
  int64_t stride = 0;       // 0 = data.seq_len (non-overlapping windows)
  int64_t every = 0;        // evaluate every k steps; 0 = at the end only
  int64_t max_batches = 0;  // 0 = all
};

// Where a key was set: file, line and column; absent when the key took its default.
struct KeySource {
  std::string file;
  int64_t line = 0;
  int64_t column = 0;
  std::string str() const;
};

struct Config {
  RunConfig run;
  ModelConfig model;
  ParallelConfig parallel;
  AdapterConfig adapter;
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  CheckpointConfig checkpoint;
  PruneConfig prune;
  EvalConfig eval;

  // Filled by the reader: "section.key" -> where it was set.
  std::map<std::string, KeySource> sources;
  std::string file;  // the file read, or "<defaults>"

  // "c.toml:12:5" for a key that was set, "<defaults> (key not set)" otherwise.
  std::string where(const std::string& dotted_key) const;
};

// Reads, type-checks and validates (ranges, choices, cross-field consistency). Throws UsageError.
// `overrides` are "section.key=value" assignments applied on top of the file (the CLI's --set);
// errors in them point at the --set that gave the value.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
Config parse_config(const std::string& text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});

// Cross-field checks that need the model's shape, e.g. heads divisible by parallel.tp.
struct ModelShape {
  int64_t vocab_size, num_layers, num_heads, num_kv_heads;
  std::string origin;  // where these numbers came from (a config.json, or [model.init])
};
void validate_against_model(const Config& config, const ModelShape& shape);

// `precision` with auto resolved for a run on a GPU (`cuda`) or on the CPU.
inline Precision resolved(Precision precision, bool cuda) {
  if (precision != Precision::automatic) return precision;
  return cuda ? Precision::bf16 : Precision::fp32;
}
// Bytes per element of a resolved precision.
inline int64_t bytes_of(Precision precision) { return precision == Precision::fp32 ? 4 : 2; }

// The resolved configuration as TOML (every key, defaults included); parse_config reads it back.
std::string to_toml(const Config& config);

// One line per key: name, type, default, allowed values, meaning.
std::string explain_config();

}  // namespace spartan
