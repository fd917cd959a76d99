// Tensors of a Hugging Face model folder as torch tensors: whole, or only a slice, so that a
// rank of a 70B model maps every shard file but touches only the pages of its own slice.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/safetensors.h"

namespace spartan::model {

torch::Dtype to_torch(DType d);
DType from_torch(torch::Dtype d);

// One whole tensor of a safetensors file, converted to `dtype`.
torch::Tensor read_tensor(const SafetensorsFile& file, const std::string& name, torch::Dtype dtype);

// A model folder with model.safetensors, or several files listed by model.safetensors.index.json.
class WeightStore {
 public:
  explicit WeightStore(const std::string& folder);

  const std::string& folder() const { return folder_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  // The folder's files, in the order they were opened.
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

  // The whole tensor, converted to `dtype`.
  torch::Tensor load(const std::string& name, torch::Dtype dtype) const;
  // Rows [begin, end) along dim 0 (any rank >= 1).
  torch::Tensor load_rows(const std::string& name, int64_t begin, int64_t end,
                          torch::Dtype dtype) const;
  // Columns [begin, end) along dim 1 of a 2-D tensor.
  torch::Tensor load_cols(const std::string& name, int64_t begin, int64_t end,
                          torch::Dtype dtype) const;

 private:
  std::string folder_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes tensors as model.safetensors, or, past `max_shard_bytes`, as
// model-0000k-of-0000n.safetensors shards with model.safetensors.index.json (as HF does).
void save_weights(const std::string& folder, const NamedTensors& tensors,
                  uint64_t max_shard_bytes = 5ull << 30);

}  // namespace spartan::model
