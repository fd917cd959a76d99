#include "trainer/checkpointing.h"

#include <ATen/Context.h>

#include <csignal>
#include <cstdio>
#include <mutex>

#include "common/error.h"

namespace spartan::trainer {
namespace {

// The state of the default generator of `device`'s type (the CPU's, or the GPU's that dropout
// draws from there) as int64 (one entry per byte), and back.
torch::Tensor rng_state(const torch::Device& device = torch::kCPU) {
  at::Generator g = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state().to(torch::kInt64);
}

void set_rng_state(const torch::Tensor& s, const torch::Device& device = torch::kCPU) {
  at::Generator g = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(s.to(torch::kUInt8));
}

// The first key whose value differs between this run's identity `a` and a checkpoint's `b`, or
// "". A key of `a` that `b` lacks was not recorded by the version that saved `b` (the base's
// values digest came later): it is not compared.
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b) {
  for (const auto& [k, v] : a.items())
    if (b.contains(k) && b[k] != v) return k;
  for (const auto& [k, v] : b.items())
    if (!a.contains(k)) return k;
  return "";
}

// The RNG state is saved per stage, side by side over the TP ranks.
const model::TpPlacement kByTpRank{model::TpPlacement::sharded, 0};

}  // namespace

CheckpointKeeper::CheckpointKeeper(const Config& config, model::Llama& model, parallel::Grid& grid,
                                   std::string run_dir, bool enabled, nlohmann::json identity,
                                   const std::vector<model::Proj>& mask_targets)
    : config_(config),
      model_(model),
      grid_(grid),
      run_dir_(std::move(run_dir)),
      enabled_(enabled),
      identity_(std::move(identity)),
      rng_key_("rng/pp" + std::to_string(grid.pp_rank())) {
  if (!mask_targets.empty()) masks_ = checkpoints::mask_digests(model_, grid_, mask_targets);
}

bool CheckpointKeeper::due(int64_t steps_done, bool last) const {
  const int64_t every = config_.checkpoint.every;
  return enabled_ && ((every > 0 && steps_done % every == 0) || last);
}

void CheckpointKeeper::save(const Progress& progress, Optimizers& optimizers,
                            const data::Sampler& sampler) {
  checkpoints::SaveRequest req;
  req.run_dir = run_dir_;
  req.step = progress.step;
  req.keep = config_.checkpoint.keep;
  optimizers.entries(model_, req.entries);
  req.entries.insert(req.entries.end(), masks_.begin(), masks_.end());
  req.entries.push_back({rng_key_, rng_state(), kByTpRank});
  if (!model_->device().is_cpu())
    req.entries.push_back({rng_key_ + "/device", rng_state(model_->device()), kByTpRank});
  const auto pos = sampler.position();
  req.state = optimizers.state();
  req.state.update({{"step", progress.step},
                    {"tokens", progress.tokens},
                    {"sampler_epoch", pos.epoch},
                    {"sampler_step", pos.step},
                    {"skipped_steps", progress.skipped_steps},
                    {"loss", checkpoints::loss_to_json(progress.loss)}});
  req.identity = identity_;
  const std::string folder = checkpoints::save(grid_, req);
  const bool root = grid_.rank() == 0;
  if (root) std::printf("saved checkpoint %s\n", folder.c_str());
  std::fflush(stdout);
  if (root && checkpoints::fault("kill-after-save", progress.step)) std::raise(SIGKILL);
}

Progress CheckpointKeeper::restore(const std::string& folder, Optimizers& optimizers,
                                   data::Sampler& sampler) {
  checkpoints::Checkpoint ck(folder);
  const auto& m = ck.manifest();
  if (!identity_.is_null()) {
    const std::string diff = first_difference(identity_, m["identity"]);
    if (!diff.empty())
      throw UsageError("the checkpoint was saved for another " + diff + " than this run's",
                       folder + "/manifest.json",
                       "resume with the same base model and settings, or start a new run "
                       "(another run.name)");
  }
  for (const auto& e : masks_)
    if (!torch::equal(ck.local(e.key, e.placement, e.local, grid_), e.local))
      throw UsageError(
          "the base model's zero pattern of " + e.key.substr(6) + " differs from the checkpoint's",
          folder, "resume on the pruned base the run was started with");
  optimizers.restore(ck, model_);
  const auto& st = m["state"];
  sampler.restore({st["sampler_epoch"].get<int64_t>(), st["sampler_step"].get<int64_t>()});
  Progress p;
  p.step = st["step"].get<int64_t>();
  p.tokens = st["tokens"].get<int64_t>();
  p.skipped_steps = st.value("skipped_steps", int64_t(0));
  p.loss = checkpoints::manifest_loss(st);  // non-finite losses round-trip
  // The RNG stream continues exactly only on the layout it was saved from.
  const auto& topo = m["topology"];
  if (topo["tp"] == grid_.layout().tp && topo["pp"] == grid_.layout().pp && ck.has(rng_key_)) {
    set_rng_state(ck.local(rng_key_, kByTpRank, rng_state(), grid_));
    const torch::Device device = model_->device();
    if (!device.is_cpu() && ck.has(rng_key_ + "/device"))
      set_rng_state(ck.local(rng_key_ + "/device", kByTpRank, rng_state(device), grid_), device);
  }
  if (grid_.rank() == 0)
    std::printf("resumed from %s at step %lld\n", folder.c_str(), static_cast<long long>(p.step));
  return p;
}

}  // namespace spartan::trainer
