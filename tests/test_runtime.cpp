// The process's C++ runtime: std:: symbols come from libstdc++, not from the copy of parts of it
// that the torch wheel's libraries export (see the link options in CMakeLists.txt).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>

namespace {

std::string library_of(void* symbol) {
  Dl_info info{};
  if (dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "?";
  return info.dli_fname;
}

TEST(Runtime, FilesystemComesFromLibstdcxx) {
  using RemoveAll = std::uintmax_t (*)(const std::filesystem::path&);
  using CreateDirectories = bool (*)(const std::filesystem::path&);
  const auto remove_all = static_cast<RemoveAll>(&std::filesystem::remove_all);
  const auto create_directories =
      static_cast<CreateDirectories>(&std::filesystem::create_directories);
  for (void* symbol :
       {reinterpret_cast<void*>(remove_all), reinterpret_cast<void*>(create_directories)}) {
    const std::string lib = library_of(symbol);
    EXPECT_NE(lib.find("libstdc++"), std::string::npos) << "bound to " << lib;
  }
  EXPECT_GT(torch::ones({2}).sum().item<float>(), 1.5f);  // and libtorch is loaded beside it
}

}  // namespace
