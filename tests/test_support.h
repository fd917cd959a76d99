// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "model/safetensors.h"
#include "model/weights.h"

namespace spartan::testing_support {

// A tensor of a golden fixture file (int64 stays int64, everything else as fp32).
inline torch::Tensor golden_tensor(const std::string& file, const std::string& name) {
  model::SafetensorsFile f(file);
  const auto dtype = f.at(name).dtype == model::DType::I64 ? torch::kInt64 : torch::kFloat32;
  return model::read_tensor(f, name, dtype);
}

// Compares the autograd gradient of `loss` with respect to each parameter (fp64) with central
// finite differences of step 1e-6, entry by entry.
inline void expect_gradients_match_finite_differences(const std::function<torch::Tensor()>& loss,
                                                      const std::vector<torch::Tensor>& params,
                                                      double tolerance = 1e-6) {
  for (auto p : params) p.mutable_grad() = torch::Tensor();
  loss().backward();
  for (auto p : params) {
    auto grad = p.grad().clone();
    torch::NoGradGuard no_grad;
    auto flat = p.view({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double h = 1e-6, keep = flat[i].item<double>();
      flat[i] = keep + h;
      const double up = loss().item<double>();
      flat[i] = keep - h;
      const double down = loss().item<double>();
      flat[i] = keep;
      EXPECT_NEAR(grad.view({-1})[i].item<double>(), (up - down) / (2 * h), tolerance) << i;
    }
  }
}

}  // namespace spartan::testing_support
