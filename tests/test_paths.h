// Where the tests find their data. The build tree's folders are compiled in as defaults; the
// environment overrides them, so that test binaries copied elsewhere (scripts/gpu-bundle) run
// against the fixtures carried beside them.
#pragma once

#include <cstdlib>
#include <string>

namespace spartan::testing_support {

inline std::string path_from_env(const char* variable, const char* fallback) {
  const char* value = std::getenv(variable);
  return value && *value ? value : fallback;
}

// Golden fixtures (tests/fixtures): $SPARTAN_FIXTURES, else the source tree's folder.
inline std::string fixtures_dir() {
  return path_from_env("SPARTAN_FIXTURES", SPARTAN_FIXTURES_DEFAULT);
}

// Real text (../shared/data): $SPARTAN_SHARED_DATA, else the folder beside the checkout.
inline std::string shared_data_dir() {
  return path_from_env("SPARTAN_SHARED_DATA", SPARTAN_SHARED_DATA_DEFAULT);
}

}  // namespace spartan::testing_support
