// Small file-system helpers shared by every layer.
#pragma once

#include <string>

namespace spartan {

void make_dirs(const std::string& path);  // mkdir -p; throws spartan::Error
bool file_exists(const std::string& path);
void copy_file(const std::string& from, const std::string& to);  // throws spartan::Error

}  // namespace spartan
