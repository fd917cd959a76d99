// Sharded checkpoints (DESIGN.md §5):
//
//   <run>/checkpoints/step-00000040/
//     manifest.json          format version, step, topology, digests, every tensor's global
//                            shape and which slice each shard file holds, trainer state
//     shard-pp00-tp01.h5     this cell's tensors (written by DP rank 0 of the cell)
//   <run>/checkpoints/latest the newest complete step's folder name
//
// A save is collective over the world: the cells write into step-N.tmp/ and fsync, all ranks
// meet, rank 0 writes the manifest last, renames the folder and replaces `latest`, then drops
// the oldest beyond `keep`. A kill at any moment leaves the previous checkpoint complete. A rank
// that fails to write makes every rank throw (the failure is agreed by an all-reduce).
//
// A tensor is saved as this rank's part with its TP placement: sharded tensors as slices (one
// per TP rank), replicated ones once. Loading reads the shards that overlap the part the loading
// rank needs, so a checkpoint saved on one layout resumes on another.
//
// Shard files (format 4) are written through a ShardWriter (shard_io.h; HDF5 is the backend).
// A tensor of 1 MiB or more is its own dataset, written from and read into the tensor's memory
// without a copy, and checked by one CRC-32C per MiB; smaller ones are packed into one dataset
// per type (/packed/float32, /packed/int64) at an element offset the manifest records, each with
// one CRC-32C. Every CRC is in the manifest and checked on every read. A rank that needs part of
// a tensor (its slice on another layout) reads only the MiB blocks that hold it, along the
// sliced dimension, into memory the size of its part plus one block. Formats 1 to 3 are still
// read (3: one CRC a tensor, streamed through one block of memory; 1 and 2: one
// Fletcher32-checksummed chunk a tensor, read whole).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoints/manifest.h"
#include "common/config.h"
#include "model/llama.h"
#include "parallel/grid.h"

namespace spartan::checkpoints {

class ShardReader;

// One tensor of this rank: its key ("params/<name>", "optim/<name>/exp_avg", ...), its local
// values and how it lies over the TP group.
struct Entry {
  std::string key;
  torch::Tensor local;
  model::TpPlacement placement;
};

struct SaveRequest {
  std::string run_dir;
  int64_t step = 0;
  int64_t keep = 2;
  std::vector<Entry> entries;
  nlohmann::json state;     // trainer state (step, tokens, sampler, schedule...), rank 0's
  nlohmann::json identity;  // digests the resume must match (config, base model)
};

// Fault injection for tests: SPARTAN_FAULT="kill-in-save=N" makes rank 0 SIGKILL itself while
// saving step N, after the shards are written and before the manifest; "kill-after-save=N"
// right after step N is committed; "throw-rankR=N" makes world rank R throw after step N (the
// trainer's check). Unset in normal use.
bool fault(const char* kind, int64_t step);

// Writes a checkpoint; returns its folder.
std::string save(parallel::Grid& grid, const SaveRequest& request);

// The folder `latest` names under <run>/checkpoints; where `latest` is missing, empty or names
// no checkpoint, the newest step-* folder with a valid manifest; "" when the run has no step
// folder. Throws when step folders exist but none holds a complete checkpoint (a run is never
// started over on top of them).
std::string latest(const std::string& run_dir);

class Checkpoint {
 public:
  explicit Checkpoint(std::string folder);  // reads and checks the manifest (manifest.h)
  ~Checkpoint();
  const std::string& folder() const { return folder_; }
  const nlohmann::json& manifest() const { return manifest_; }
  bool has(const std::string& key) const;
  // The global tensor of `key`, assembled from its shards (fp32, or int64 for integer data).
  torch::Tensor global(const std::string& key) const;
  // The range [begin, begin + size) of `key` along `dim` (dim < 0: the whole tensor): only the
  // shards that overlap it are opened, and of each only the blocks that hold the range.
  torch::Tensor range(const std::string& key, int64_t dim, int64_t begin, int64_t size) const;
  // This rank's part of `key` for `placement`, shaped like `like`.
  torch::Tensor local(const std::string& key, const model::TpPlacement& placement,
                      const torch::Tensor& like, parallel::Grid& grid) const;
  // Reads every dataset of every shard (checksums); returns the number of bytes read.
  int64_t verify() const;
  // The bytes read from shard files so far.
  int64_t bytes_read() const { return bytes_read_; }

 private:
  // Each shard file is opened once, on first use, and stays open while the checkpoint is read.
  const ShardReader& file(const std::string& name) const;
  // The box [lo[d], hi[d]) of one shard's part (`shape`) into `data` (the box, row-major), its
  // CRCs checked.
  void read_box(const std::string& key, const nlohmann::json& shard, bool integer,
                const std::vector<int64_t>& shape, const std::vector<int64_t>& lo,
                const std::vector<int64_t>& hi, void* data) const;

  std::string folder_;
  nlohmann::json manifest_;
  mutable std::map<std::string, std::unique_ptr<ShardReader>> files_;
  mutable int64_t bytes_read_ = 0;
};

// Attaches `adapter` (a run's configuration) to `model` and loads every trained tensor of the
// checkpoint into it (full fine-tuning: the weights themselves): the adapted model of that step.
// With `grid`, `model` is this rank's TP shard and gets its slices (any layout the checkpoint was
// saved on); without, the whole model in one process.
void load_trained(const Checkpoint& ck, const AdapterConfig& adapter, model::Llama& model,
                  parallel::Grid* grid = nullptr);

// A digest of each targeted base weight's zero pattern that does not depend on the layout: for
// every output row, the wrapping sum of a hash of each zero's column index, summed over TP.
// Entries "masks/<weight name>" (int64, one per output row), replicated.
std::vector<Entry> mask_digests(model::Llama& model, parallel::Grid& grid,
                                const std::vector<model::Proj>& targets);

// The base folder's identity: a hash of config.json and every tensor's name, dtype and shape.
std::string base_model_digest(const std::string& folder);

// A hash of the base's values, sampled so that it stays cheap at 70B: every tensor up to 64 KiB
// whole, larger ones by their first and last 4 KiB and 16 blocks of 256 bytes spread between
// (at most 12 KiB a tensor, read from the mapped files). Re-exported or edited weights with the
// same names and shapes change it unless every change falls outside the samples.
std::string base_values_digest(const std::string& folder);

}  // namespace spartan::checkpoints
