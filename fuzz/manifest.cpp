// libFuzzer target: the checkpoint manifest's parser and validator (checkpoints/manifest.h) on
// arbitrary bytes. A refusal is a spartan::Error (or JSON's parse error, which read_manifest
// turns into one); anything else is a bug. Built and run by scripts/fuzz.
#include "checkpoints/manifest.h"

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "common/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  // Half the inputs with their checksum made right, so that the field checks behind it are
  // reached; the other half as they are.
  if (size % 2 == 0 && m.is_object()) m["checksum"] = spartan::checkpoints::manifest_checksum(m);
  try {
    spartan::checkpoints::check_manifest(m, "fuzz/manifest.json");
    spartan::checkpoints::manifest_loss(m.value("state", nlohmann::json::object()));
  } catch (const spartan::Error&) {
  }
  return 0;
}
