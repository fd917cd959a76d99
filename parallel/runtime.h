// The runtime of one rank (DESIGN.md §8): where it computes and in which precision. Built once at
// start from `run.device`, `model.dtype` and `model.compute_dtype`, like the grid, and passed down,
// so that no code below the launcher names a device or a floating-point dtype of its own.
//
// The precision policy, in one place:
//   - the frozen base is held in `base_dtype` (bf16 on a GPU unless the configuration says
//     otherwise, fp32 on the CPU);
//   - trainable parameters and their optimizer state are fp32 master weights (`master_dtype`);
//   - products run in `compute_dtype` inside a ComputeScope (torch's autocast): a master weight is
//     cast to it as it enters a product, and its gradient arrives in fp32;
//   - the loss, norms, the gradient-norm clip and SoRA's gate step stay fp32 (the model computes
//     its losses from fp32 logits, the optimizers run outside any ComputeScope);
//   - SPP's zeros are exact in every precision: the base's zero times anything is a zero of every
//     dtype, so the effective weight keeps the base's pattern bit for bit.
#pragma once

#include <torch/torch.h>

#include <string>

#include "common/config.h"

namespace spartan::parallel {

struct Runtime {
  torch::Device device = torch::kCPU;
  torch::ScalarType base_dtype = torch::kFloat32;     // the frozen base's weights
  torch::ScalarType compute_dtype = torch::kFloat32;  // products, inside a ComputeScope
  torch::ScalarType master_dtype = torch::kFloat32;   // trainable parameters, optimizer state

  bool cuda() const { return device.is_cuda(); }
  // Options for a tensor of the base, or of a trainable parameter, on this rank's device.
  torch::TensorOptions base() const { return torch::dtype(base_dtype).device(device); }
  torch::TensorOptions master() const { return torch::dtype(master_dtype).device(device); }
  // "cpu, base fp32, compute fp32, masters fp32"
  std::string describe() const;
};

// The torch dtype of a resolved precision (not Precision::automatic).
torch::ScalarType scalar_type(Precision precision);
// "fp32", "bf16", "fp16" for a floating-point torch dtype.
std::string precision_name(torch::ScalarType dtype);

// Whether this process sees a CUDA device.
bool cuda_visible();

// The runtime of this process for `device` and the two precisions (auto resolved for the device
// chosen). cuda is device `local_rank % count` of the devices this process sees: 0 when the
// launcher gave each rank its own (SPARTAN_GPU_PER_RANK=1), else ranks of one node spread over
// its GPUs, sharing them when there are more ranks than GPUs. A request for cuda where none is
// visible is a UsageError naming `where`.
Runtime make_runtime(DeviceKind device, Precision base, Precision compute, int local_rank,
                     const std::string& where);
// The same from a configuration's run.device, model.dtype and model.compute_dtype, on the
// local rank the launcher's environment names (common/launch_env.h).
Runtime make_runtime(const Config& config);

// While alive, the products this thread runs on the runtime's device are computed in its compute
// dtype (torch's autocast, with its lists of operations kept in fp32); where the compute dtype is
// fp32 it does nothing. Its cache of cast weights is dropped when the scope ends, so a weight
// changed by the optimizer is cast again.
class ComputeScope {
 public:
  explicit ComputeScope(const Runtime& runtime)
      : ComputeScope(runtime.device, runtime.compute_dtype) {}
  ComputeScope(torch::Device device, torch::ScalarType compute_dtype);
  ~ComputeScope();
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;

 private:
  bool active_ = false;
  torch::DeviceType type_ = torch::kCPU;
  bool was_enabled_ = false;
  torch::ScalarType was_dtype_ = torch::kFloat32;
};

}  // namespace spartan::parallel
