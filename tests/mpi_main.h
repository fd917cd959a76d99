// The main() of a GoogleTest executable run under mpiexec with `--layout TP,PP,DP`: builds the
// grid, keeps GoogleTest's printer on rank 0 only, runs the tests, and fails on every rank when
// a test failed on any. `after_all` runs on rank 0 once every rank is done.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <sstream>
#include <string>

#include "parallel/grid.h"

namespace spartan::testing_support {

inline int run_mpi_tests(int argc, char** argv, parallel::Layout& layout,
                         std::unique_ptr<parallel::Grid>& grid,
                         const std::function<void()>& after_all = nullptr) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--layout") {
      std::stringstream in(argv[i + 1]);
      char comma;
      in >> layout.tp >> comma >> layout.pp >> comma >> layout.dp;
    }
  grid = parallel::Grid::create(layout, "--layout");
  if (grid->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  torch::set_num_threads(1);
  const int failed = RUN_ALL_TESTS();
  auto any = torch::tensor({static_cast<int64_t>(failed)});
  grid->world().all_reduce(any);
  if (grid->rank() == 0 && after_all) after_all();
  grid.reset();
  return any.item<int64_t>() == 0 ? 0 : 1;
}

}  // namespace spartan::testing_support
