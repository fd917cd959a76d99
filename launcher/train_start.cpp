#include "launcher/train_start.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "adapters/method.h"
#include "checkpoints/checkpoint.h"
#include "common/error.h"
#include "common/files.h"
#include "common/launch_env.h"
#include "common/memory_use.h"
#include "model/hf_config.h"
#include "model/inspect.h"
#include "parallel/mpi.h"
#include "parallel/nccl.h"
#include "trainer/process.h"

namespace spartan::launcher {
namespace {

[[noreturn]] void missing(const Config& c, const std::string& key, const std::string& what) {
  throw UsageError(what, c.where(key) + " (key '" + key + "')",
                   "set " + key + " in the configuration");
}

std::string tokenizer_path(const Config& c) {
  if (!c.data.tokenizer.empty()) return c.data.tokenizer;
  return c.model.path + "/tokenizer.model";
}

// Every rank writes its checkpoint shards into the run folder that rank 0 made, and a resume
// reads them all from there: the folder must be one folder, not a folder of each node's own
// storage at the same path. Rank 0 leaves a random token in it that every rank reads back.
void check_shared_run_folder(const Config& c, parallel::Grid& grid, const std::string& run_dir) {
  const std::string mark = run_dir + "/.shared-folder-check";
  torch::Tensor token = torch::zeros({1}, torch::kInt64);
  if (grid.rank() == 0) {
    std::random_device entropy;
    token[0] = (static_cast<int64_t>(entropy()) << 31) ^ static_cast<int64_t>(entropy());
    std::ofstream(mark) << token.item<int64_t>() << "\n";
  }
  grid.world().broadcast(token, 0);
  const std::string where = c.where("run.output_dir") + " (key 'run.output_dir')";
  const std::string todo = "put run.output_dir on storage that every node mounts";
  parallel::check_on_every_rank([&] {
    if (::access(run_dir.c_str(), W_OK | X_OK) != 0)
      throw UsageError("cannot write to the run folder " + run_dir + " that rank 0 made", where,
                       todo);
    int64_t seen = 0;
    if (!(std::ifstream(mark) >> seen) || seen != token.item<int64_t>())
      throw UsageError("the run folder " + run_dir + " is not the one rank 0 made", where,
                       todo +
                           " (a folder at the same path on each node's own disk is not one "
                           "folder)");
  });
  grid.world().barrier();  // every rank has read the mark
  if (grid.rank() == 0) std::remove(mark.c_str());
}

// Sequences with no token to learn from (every response cut off at seq_len) would train on
// nothing and report a loss of 0.
void check_loss_tokens(const Config& c, const data::DataSplit& data) {
  for (const auto* part : {&data.train, &data.held_out})
    if (part->rows() > 0 && part->loss_tokens == 0)
      throw UsageError(
          std::string("no ") + (part == &data.train ? "training" : "held-out") +
              " sequence keeps a token of a response: " + std::to_string(part->truncated) + " of " +
              std::to_string(part->examples) +
              " records were cut at data.seq_len = " + std::to_string(c.data.seq_len),
          c.where("data.seq_len") + " (key 'data.seq_len')",
          "raise data.seq_len or shorten the prompts");
}

// Whether CUDA tensors move by NCCL: parallel.backend resolved for a run on the GPU. NCCL needs
// a GPU of its own for each rank of a node; ranks that share one stage through host memory.
bool use_nccl(const Config& c) {
  const std::string where = c.where("parallel.backend") + " (key 'parallel.backend')";
  // SPARTAN_GPU_PER_RANK=1: the launcher left each rank one GPU of its own (launcher/cluster.h).
  const bool own_gpus =
      gpu_per_rank() || launcher_local_size() <= static_cast<int>(torch::cuda::device_count());
  switch (c.parallel.backend) {
    case Backend::mpi:
      return false;
    case Backend::automatic:
      return parallel::nccl_available() && own_gpus;
    case Backend::nccl:
      if (!parallel::nccl_available())
        throw UsageError("this build of spartan has no NCCL", where,
                         "use backend = \"mpi\" or \"auto\", or build where NCCL is installed");
      if (!own_gpus)
        throw UsageError(std::to_string(launcher_local_size()) + " ranks share this node's " +
                             std::to_string(torch::cuda::device_count()) +
                             " GPUs, and NCCL needs a GPU for each",
                         where, "start one rank per GPU, or use backend = \"auto\" or \"mpi\"");
      return true;
  }
  return false;
}

std::unique_ptr<parallel::Grid> make_grid(const Config& c, const parallel::Runtime& runtime) {
  if (c.parallel.backend == Backend::nccl && !runtime.cuda())
    throw UsageError("the NCCL backend moves CUDA tensors; this run computes on the CPU",
                     c.where("parallel.backend") + " (key 'parallel.backend')",
                     "use backend = \"mpi\" or \"auto\", or run.device = \"cuda\" on a GPU node");
  parallel::Transport transport;
  parallel::check_on_every_rank([&] {  // a rank refusing NCCL stops every rank
    if (runtime.cuda()) {
      transport.cuda_device = runtime.device.index();
      transport.nccl = use_nccl(c);
    }
  });
  const parallel::Layout layout{c.parallel.tp, c.parallel.pp, c.parallel.dp};
  std::string layout_key = "parallel.dp";  // the key to point at: one the user set, if any
  for (const char* k : {"parallel.tp", "parallel.pp", "parallel.dp"})
    if (c.where(k).find("default") == std::string::npos) layout_key = k;
  auto grid = parallel::Grid::create(
      layout, c.where(layout_key) + " (keys 'parallel.tp', 'parallel.pp', 'parallel.dp')",
      transport);
  if (grid->world_size() > 1) parallel::set_collective_timeout(c.parallel.timeout_s);
  return grid;
}

}  // namespace

TrainStart start_training(const std::string& config_path, const std::vector<std::string>& overrides,
                          const std::string& resume_option) {
  TrainStart s;
  Config& c = s.config;
  // Under a launcher, MPI starts first (check_on_every_rank starts it).
  parallel::check_on_every_rank([&] {
    c = load_config(config_path, overrides);
    if (c.model.path.empty()) missing(c, "model.path", "no base model folder");
    if (c.data.path.empty()) missing(c, "data.path", "no training data");
    // Read here, so that a node without config.json fails now: model_shape would fall back on
    // [model.init] and train another shape.
    const model::LlamaArch arch = model::read_hf_config(c.model.path);
    s.shape = model_shape(c);
    validate_against_model(c, s.shape);
    s.runtime = parallel::make_runtime(c);
    // A method that trains the base's own weights needs them as fp32 masters.
    if (adapters::method(c.adapter.method).site() == adapters::Site::base &&
        s.runtime.base_dtype != torch::kFloat32) {
      if (c.model.dtype != Precision::automatic)
        throw UsageError("adapter.method = \"" + c.adapter.method +
                             "\" trains the base's own weights, which must be fp32 masters, "
                             "not " +
                             name_of(c.model.dtype),
                         c.where("model.dtype") + " (key 'model.dtype')",
                         "set model.dtype = \"fp32\" or \"auto\" (products may still run "
                         "in bf16: model.compute_dtype)");
      s.runtime.base_dtype = torch::kFloat32;
    }
    if (!s.runtime.cuda())  // host memory: on a GPU the base and the activations are not there
      check_memory_fits(arch, memory_inputs(c, c.data.seq_len), c.run.memory_limit_gb,
                        c.model.path + "/config.json with " + c.where("data.seq_len") +
                            " (keys 'data.seq_len', 'optim.micro_batch_size', 'adapter.r')");
  });
  s.grid = make_grid(c, s.runtime);
  s.run_dir = c.run.output_dir + "/" + c.run.name;
  // An existing run folder with a checkpoint resumes from its newest one, unless --resume names
  // another.
  s.resume = !resume_option.empty() ? resume_option : checkpoints::latest(s.run_dir);
  if (!resume_option.empty() && !file_exists(resume_option + "/manifest.json"))
    throw UsageError("no checkpoint manifest in " + resume_option, "--resume",
                     "name a checkpoint folder (runs/<name>/checkpoints/step-...)");
  if (s.root()) {
    make_dirs(s.run_dir);
    std::ofstream(s.run_dir + "/config.resolved.toml") << to_toml(c);
  }
  if (s.distributed()) check_shared_run_folder(c, *s.grid, s.run_dir);

  if (s.distributed())
    s.shard = model::make_shard(*s.grid, s.shape.num_layers, c.parallel.pp_split);
  // The inputs each rank reads on its own node; a node that cannot is named.
  s.resident_before_load = resident_bytes();
  parallel::check_on_every_rank([&] {
    s.model = model::load_llama(c.model.path, s.runtime.base(), s.shard);
    s.model->set_compute_dtype(s.runtime.compute_dtype);
    s.model->set_recompute_layers(c.train.recompute == Recompute::layer);
    s.tokenizer = std::make_unique<model::Tokenizer>(tokenizer_path(c));
    s.data = data::load_data(c.data.path, c.data.format, *s.tokenizer, c.data.seq_len, c.data.pack,
                             c.data.held_out_fraction, c.run.seed);
    if (!c.eval.path.empty())  // [eval] path: held-out data of its own, all of the file
      s.data.held_out = data::load_data(c.eval.path, "auto", *s.tokenizer, c.data.seq_len,
                                        c.data.pack, 0.0, c.run.seed)
                            .train;
  });
  model::check_tokenizer_fits(s.model->arch(), s.tokenizer->vocab_size(), s.tokenizer->path());
  check_loss_tokens(c, s.data);
  trainer::fit_allocator_to(model::largest_projection_bytes(s.model));
  return s;
}

}  // namespace spartan::launcher
