#include "common/memory_use.h"

#include <malloc.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace spartan {

int64_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

int64_t peak_resident_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmHWM:") {
      int64_t kib = 0;
      in >> kib;
      return kib * 1024;
    }
    std::getline(in, key);
  }
  return 0;
}

bool reset_peak_resident() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

void keep_large_blocks_in_heap() {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // nor handed back from the heap's top when freed
}

void return_large_blocks_to_kernel(int64_t threshold) {
  mallopt(M_MMAP_MAX, 65536);                              // glibc's default count
  mallopt(M_MMAP_THRESHOLD, static_cast<int>(threshold));  // fixed: no longer raised on free
  mallopt(M_TRIM_THRESHOLD, static_cast<int>(threshold));
  malloc_trim(0);
}

}  // namespace spartan
