// Linked into every GoogleTest binary: a fresh scratch folder under $TMPDIR (or /tmp) made before
// the tests start and set as TEST_TMPDIR, where testing::TempDir() points, so every scratch file
// of the tests lands in it; removed when the binary exits. A test binary that ends normally,
// passing or failing, leaves nothing in /tmp.
#include <cstdlib>
#include <filesystem>
#include <string>

namespace {

struct Scratch {
  std::string dir;
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/spartan-test-XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) {
      dir = pattern;
      ::setenv("TEST_TMPDIR", dir.c_str(), 1);
    }
  }
  ~Scratch() {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

const Scratch scratch;

}  // namespace
