#include "common/files.h"

#include <sys/stat.h>

#include <cerrno>
#include <fstream>

#include "common/error.h"

namespace spartan {

void make_dirs(const std::string& path) {
  std::string partial;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!partial.empty() && ::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
        throw Error("cannot create folder", partial, "check permissions and free space");
    }
    if (i < path.size()) partial += path[i];
  }
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void copy_file(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  out << in.rdbuf();
  if (!in || !out) throw Error("cannot copy " + from, to, "check permissions and free space");
}

}  // namespace spartan
