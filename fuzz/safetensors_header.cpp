// libFuzzer target: the safetensors reader (header length, JSON header, dtypes, shapes, offsets,
// overlaps) on arbitrary bytes. A refusal is a spartan::Error; anything else (a crash, a sanitizer
// report, another exception) is a bug. Built and run by scripts/fuzz.
#include <cstddef>
#include <cstdint>

#include "common/error.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    spartan::model::SafetensorsFile file("fuzz.safetensors", data, size);
    // Touch what a loader touches: every tensor's first and last byte.
    unsigned sum = 0;
    for (const auto& t : file.tensors())
      if (t.nbytes() > 0)
        sum += static_cast<unsigned>(file.data(t)[0]) +
               static_cast<unsigned>(file.data(t)[t.nbytes() - 1]);
    return sum == 0xdeadbeef ? 1 : 0;
  } catch (const spartan::Error&) {
    return 0;
  }
}
