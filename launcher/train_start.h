// The start of `spartan train`, before anything trains: the configuration checked against the
// model on every rank, the grid built, the run folder made (and checked to be one folder on every
// node), this rank's shard of the base, the tokenizer and the data loaded and checked. Under a
// launcher every rank checks its own node's files, and a node that lacks one is named.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "data/dataset.h"
#include "launcher/model_shape.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "parallel/grid.h"
#include "parallel/runtime.h"

namespace spartan::launcher {

struct TrainStart {
  Config config;
  ModelShape shape;
  std::unique_ptr<parallel::Grid> grid;
  std::string run_dir;
  std::string resume;         // the checkpoint to continue from, or ""
  parallel::Runtime runtime;  // this rank's device and precision
  model::Shard shard;         // this rank's part of the model
  model::Llama model{nullptr};
  std::unique_ptr<model::Tokenizer> tokenizer;
  data::DataSplit data;
  int64_t resident_before_load = 0;  // bytes: the process before its shard of the model
  bool root() const { return grid->rank() == 0; }
  bool distributed() const { return grid->world_size() > 1; }
};

// `resume_option`: --resume's folder, or "" for the run's newest checkpoint, if any.
TrainStart start_training(const std::string& config_path, const std::vector<std::string>& overrides,
                          const std::string& resume_option);

}  // namespace spartan::launcher
