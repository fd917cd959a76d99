#include "data/dictd.h"

#include <zlib.h>

#include <fstream>
#include <sstream>

#include "common/error.h"

namespace spartan::data {
namespace {

// dictd's numbers: base64 digits, most significant first.
bool decode_b64(const std::string& s, uint64_t* out) {
  static const std::string digits =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint64_t v = 0;
  for (char c : s) {
    auto d = digits.find(c);
    if (d == std::string::npos) return false;
    v = v * 64 + d;
  }
  *out = v;
  return !s.empty();
}

std::string read_dict_body(const std::string& prefix) {
  for (const std::string& path : {prefix + ".dict.dz", prefix + ".dict"}) {
    gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
    if (!f) continue;
    std::string body;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) body.append(buf, n);
    const bool failed = n < 0;
    gzclose(f);
    if (failed) throw Error("cannot decompress dictionary", path, "reinstall the dict package");
    return body;
  }
  throw Error("no dictionary body", prefix + ".dict.dz",
              "install the dict package (e.g. dict-jargon) or pass its path prefix");
}

}  // namespace

std::string fold_whitespace(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      space = !out.empty();
    } else {
      if (space) out += ' ';
      out += c;
      space = false;
    }
  }
  return out;
}

std::vector<DictEntry> read_dictd(const std::string& prefix) {
  const std::string index_path = prefix + ".index";
  std::ifstream index(index_path);
  if (!index)
    throw Error("cannot read dictionary index", index_path,
                "install the dict package (e.g. dict-jargon) or pass its path prefix");
  const std::string body = read_dict_body(prefix);
  std::vector<DictEntry> entries;
  int64_t line_no = 0;
  for (std::string line; std::getline(index, line);) {
    ++line_no;
    std::istringstream fields(line);
    std::string head, off, len;
    if (!std::getline(fields, head, '\t') || !std::getline(fields, off, '\t') ||
        !std::getline(fields, len, '\t'))
      throw Error("malformed index line", index_path + ":" + std::to_string(line_no),
                  "reinstall the dict package");
    if (head.rfind("00-database", 0) == 0 || head.rfind("00database", 0) == 0) continue;
    uint64_t begin = 0, size = 0;
    if (!decode_b64(off, &begin) || !decode_b64(len, &size) || begin + size > body.size())
      throw Error("index entry '" + head + "' points outside the dictionary",
                  index_path + ":" + std::to_string(line_no), "reinstall the dict package");
    std::string text = body.substr(begin, size);
    auto first_newline = text.find('\n');  // the first line repeats the headword
    text = first_newline == std::string::npos ? "" : text.substr(first_newline + 1);
    std::string definition = fold_whitespace(text);
    if (!definition.empty()) entries.push_back({head, definition});
  }
  return entries;
}

}  // namespace spartan::data
