#include "parallel/runtime.h"

#include <ATen/autocast_mode.h>

#include "common/error.h"
#include "common/launch_env.h"

namespace spartan::parallel {
torch::ScalarType scalar_type(Precision precision) {
  switch (precision) {
    case Precision::bf16:
      return torch::kBFloat16;
    case Precision::fp16:
      return torch::kFloat16;
    case Precision::fp32:
    case Precision::automatic:  // resolved before it gets here
      break;
  }
  return torch::kFloat32;
}

std::string precision_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16:
      return "bf16";
    case torch::kFloat16:
      return "fp16";
    case torch::kFloat32:
      return "fp32";
    default:
      return c10::toString(dtype);
  }
}

std::string Runtime::describe() const {
  return device.str() + ", base " + precision_name(base_dtype) + ", compute " +
         precision_name(compute_dtype) + ", masters " + precision_name(master_dtype);
}

bool cuda_visible() { return torch::cuda::is_available() && torch::cuda::device_count() > 0; }

Runtime make_runtime(DeviceKind device, Precision base, Precision compute, int local_rank,
                     const std::string& where) {
  const bool visible = cuda_visible();
  if (device == DeviceKind::cuda && !visible)
    throw UsageError("run.device = \"cuda\" but this process sees no CUDA device" +
                         std::string(torch::cuda::is_available() ? "" : " (or no CUDA driver)"),
                     where, "run on a GPU node, or set run.device = \"cpu\" or \"auto\"");
  const bool cuda = device == DeviceKind::cuda || (device == DeviceKind::automatic && visible);
  Runtime r;
  if (cuda) {
    const auto count = static_cast<int>(torch::cuda::device_count());
    r.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % count));
  }
  r.base_dtype = scalar_type(resolved(base, cuda));
  r.compute_dtype = scalar_type(resolved(compute, cuda));
  return r;
}

Runtime make_runtime(const Config& c) {
  return make_runtime(c.run.device, c.model.dtype, c.model.compute_dtype,
                      launcher_local_rank().value_or(0),
                      c.where("run.device") + " (key 'run.device')");
}

ComputeScope::ComputeScope(torch::Device device, torch::ScalarType compute_dtype)
    : type_(device.type()) {
  if (compute_dtype == torch::kFloat32) return;
  active_ = true;
  was_enabled_ = at::autocast::is_autocast_enabled(type_);
  was_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, compute_dtype);
  at::autocast::increment_nesting();
}

ComputeScope::~ComputeScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type_, was_enabled_);
  at::autocast::set_autocast_dtype(type_, was_dtype_);
}

}  // namespace spartan::parallel
