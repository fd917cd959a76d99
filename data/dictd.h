// Dictionaries in the dictd format (Debian's dict-* packages: NAME.index + NAME.dict.dz), read
// as (headword, definition) entries. The demo builds its corpora from them.
#pragma once

#include <string>
#include <vector>

namespace spartan::data {

struct DictEntry {
  std::string headword;
  std::string definition;  // the entry's text with the headword line removed, whitespace folded
};

// Reads <prefix>.index and <prefix>.dict.dz (or <prefix>.dict); database info entries
// ("00-database-*") are skipped. Entries come in index order.
std::vector<DictEntry> read_dictd(const std::string& prefix);

// Folds runs of whitespace (newlines included) into single spaces and trims.
std::string fold_whitespace(const std::string& s);

}  // namespace spartan::data
