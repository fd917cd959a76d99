#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "data/sampler.h"

namespace spartan::data {
namespace {

using json = nlohmann::json;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read data file", path, "check [data] path and its permissions");
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

[[noreturn]] void bad_record(const std::string& path, int64_t index, const std::string& what) {
  throw Error("malformed record: " + what, path + ", record " + std::to_string(index),
              "fix or remove that record");
}

std::string string_field(const json& rec, const char* key, bool required, const std::string& path,
                         int64_t index) {
  auto it = rec.find(key);
  if (it == rec.end() || it->is_null()) {
    if (required) bad_record(path, index, std::string("no '") + key + "' field");
    return "";
  }
  if (!it->is_string())
    bad_record(path, index, std::string("'") + key + "' is " + it->type_name() + ", not a string");
  return it->get<std::string>();
}

Record to_record(const json& rec, const std::string& path, int64_t index) {
  if (!rec.is_object())
    bad_record(path, index, std::string("a ") + rec.type_name() + " where an object was expected");
  return {string_field(rec, "instruction", true, path, index),
          string_field(rec, "input", false, path, index),
          string_field(rec, "output", true, path, index)};
}

// Calls f(line, index) for each non-empty line of a JSONL text, parsed.
template <class F>
void for_each_jsonl(const std::string& text, const std::string& path, F f) {
  std::istringstream in(text);
  int64_t index = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json rec;
    try {
      rec = json::parse(line);
    } catch (const json::exception& e) {
      bad_record(path, index, std::string("not valid JSON (") + e.what() + ")");
    }
    f(rec, index++);
  }
}

bool starts_json_array(const std::string& text) {
  auto p = text.find_first_not_of(" \t\r\n");
  return p != std::string::npos && text[p] == '[';
}

}  // namespace

const char* format_name(Format f) {
  switch (f) {
    case Format::alpaca:
      return "alpaca";
    case Format::text:
      return "text";
    case Format::jsonl_text:
      return "jsonl_text";
  }
  return "?";
}

Format resolve_format(const std::string& path, const std::string& configured) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error("the data path is a folder, not a file", path,
                "point [data] path (or --data) at a data file");
  std::ifstream in(path);
  if (!in) throw Error("cannot read data file", path, "check [data] path and its permissions");
  std::string first;
  while (std::getline(in, first) && first.find_first_not_of(" \t\r") == std::string::npos) {
  }
  if (!in && first.find_first_not_of(" \t\r") == std::string::npos)
    throw Error("no records (the file is empty)", path, "point [data] path at a file with records");
  if (configured == "alpaca") return Format::alpaca;
  if (configured == "text") return Format::text;
  if (configured == "jsonl_text") return Format::jsonl_text;
  if (starts_json_array(first)) return Format::alpaca;
  // A .json/.jsonl file is JSON: when its first record does not read as one of the formats,
  // that is an error, never a reason to train on it as plain text.
  const auto dot = path.rfind('.');
  const std::string ext = dot == std::string::npos ? "" : path.substr(dot);
  const bool json_file = ext == ".json" || ext == ".jsonl";
  json rec = json::parse(first, nullptr, /*allow_exceptions=*/false);
  if (rec.is_discarded()) {
    if (json_file)
      throw UsageError(
          "the first record is not one line of valid JSON (a syntax error, invalid "
          "UTF-8, or pretty-printed objects without [ ])",
          path, "fix the file, or give one JSON object per line");
    return Format::text;
  }
  if (rec.is_object() && rec.contains("instruction")) return Format::alpaca;
  if (rec.is_object() && rec.contains("text")) return Format::jsonl_text;
  if (json_file || rec.is_object()) {
    std::string keys;
    if (rec.is_object())
      for (const auto& [k, v] : rec.items()) keys += (keys.empty() ? "" : ", ") + k;
    throw UsageError("the first record has neither \"instruction\" (Alpaca) nor \"text\"" +
                         (keys.empty() ? std::string() : " (it has: " + keys + ")"),
                     path, "fix the field names, or set [data] format");
  }
  return Format::text;
}

std::vector<Record> read_alpaca(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<Record> records;
  if (!starts_json_array(text)) {
    for_each_jsonl(text, path,
                   [&](const json& rec, int64_t i) { records.push_back(to_record(rec, path, i)); });
    return records;
  }
  int64_t complete = 0;  // records fully parsed before a syntax error
  json all;
  try {
    all = json::parse(text, [&](int depth, json::parse_event_t event, json&) {
      if (depth == 1 &&
          (event == json::parse_event_t::object_end || event == json::parse_event_t::value))
        ++complete;
      return true;
    });
  } catch (const json::exception& e) {
    bad_record(path, complete, std::string("not valid JSON (") + e.what() + ")");
  }
  for (size_t i = 0; i < all.size(); ++i) records.push_back(to_record(all[i], path, i));
  return records;
}

std::vector<std::string> read_documents(const std::string& path, Format format) {
  const std::string text = read_file(path);
  std::vector<std::string> docs;
  if (format == Format::jsonl_text) {
    for_each_jsonl(text, path, [&](const json& rec, int64_t i) {
      if (!rec.is_object()) bad_record(path, i, "not an object");
      docs.push_back(string_field(rec, "text", true, path, i));
    });
    return docs;
  }
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) docs.push_back(line);
  return docs;
}

std::string alpaca_prompt(const Record& r) {
  if (r.input.empty())
    return "Below is an instruction that describes a task. Write a response that appropriately "
           "completes the request.\n\n### Instruction:\n" +
           r.instruction + "\n\n### Response:";
  return "Below is an instruction that describes a task, paired with an input that provides "
         "further context. Write a response that appropriately completes the request.\n\n"
         "### Instruction:\n" +
         r.instruction + "\n\n### Input:\n" + r.input + "\n\n### Response:";
}

Example tokenize_instruction(const model::Tokenizer& tok, const Record& r) {
  const std::string prompt = alpaca_prompt(r);
  const size_t prompt_len = tok.encode(prompt).size();
  Example e;
  e.ids = tok.encode(prompt + r.output, /*add_bos=*/true, /*add_eos=*/true);
  e.labels = e.ids;
  std::fill(e.labels.begin(), e.labels.begin() + std::min(prompt_len, e.labels.size()), kIgnore);
  return e;
}

Example tokenize_document(const model::Tokenizer& tok, const std::string& text) {
  Example e;
  e.ids = tok.encode(text, /*add_bos=*/true, /*add_eos=*/true);
  e.labels = e.ids;
  return e;
}

Sequences make_sequences(const std::vector<Example>& examples, int64_t seq_len, bool pack,
                         int64_t pad_id) {
  Sequences s;
  s.seq_len = seq_len;
  for (const auto& e : examples) {
    const int64_t n = std::min<int64_t>(e.ids.size(), seq_len);
    s.truncated += static_cast<int64_t>(e.ids.size()) > seq_len;
    ++s.examples;
    s.ids.insert(s.ids.end(), e.ids.begin(), e.ids.begin() + n);
    s.labels.insert(s.labels.end(), e.labels.begin(), e.labels.begin() + n);
    if (!pack) {
      s.ids.resize(s.ids.size() + (seq_len - n), pad_id);
      s.labels.resize(s.labels.size() + (seq_len - n), kIgnore);
    }
  }
  const int64_t rest = static_cast<int64_t>(s.ids.size()) % seq_len;
  if (rest) {
    s.ids.resize(s.ids.size() + (seq_len - rest), pad_id);
    s.labels.resize(s.labels.size() + (seq_len - rest), kIgnore);
  }
  for (size_t i = 0; i < s.labels.size(); ++i)
    s.loss_tokens += (i % seq_len != 0) && s.labels[i] != kIgnore;
  return s;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> split_held_out(int64_t n, double fraction,
                                                                     uint64_t seed) {
  std::vector<int64_t> order = permutation(n, seed ^ 0x5eed0fda7aULL);
  int64_t held = static_cast<int64_t>(std::llround(n * fraction));
  if (fraction > 0 && n > 1) held = std::clamp<int64_t>(held, 1, n - 1);
  std::vector<int64_t> held_out(order.begin(), order.begin() + held);
  std::vector<int64_t> train(order.begin() + held, order.end());
  std::sort(held_out.begin(), held_out.end());
  std::sort(train.begin(), train.end());
  return {train, held_out};
}

DataSplit load_data(const std::string& path, const std::string& format, const model::Tokenizer& tok,
                    int64_t seq_len, bool pack, double held_out_fraction, uint64_t seed) {
  DataSplit out;
  out.format = resolve_format(path, format);
  std::vector<Example> examples;
  if (out.format == Format::alpaca) {
    for (const auto& r : read_alpaca(path)) examples.push_back(tokenize_instruction(tok, r));
  } else {
    for (const auto& d : read_documents(path, out.format))
      examples.push_back(tokenize_document(tok, d));
  }
  if (examples.empty())
    throw Error("no records", path, "point [data] path at a file with training records");
  auto [train_idx, held_idx] = split_held_out(examples.size(), held_out_fraction, seed);
  std::vector<Example> train, held;
  for (int64_t i : train_idx) train.push_back(std::move(examples[i]));
  for (int64_t i : held_idx) held.push_back(std::move(examples[i]));
  out.train = make_sequences(train, seq_len, pack, tok.eos_id());
  out.held_out = make_sequences(held, seq_len, pack, tok.eos_id());
  return out;
}

}  // namespace spartan::data
