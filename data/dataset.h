// Training data: Alpaca instruction records and plain text, tokenized into fixed-length
// sequences with labels (-100 where no loss is taken). No torch here.
//
// Formats
//   alpaca      JSON array or JSONL of {"instruction", "input" (optional), "output"}
//   text        plain text, one document per line (empty lines skipped)
//   jsonl_text  JSONL of {"text": ...}
// Instruction records use the Stanford Alpaca prompt; the loss covers only the response and the
// closing </s>. Documents of text formats are <s> text </s>, all tokens in the loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace spartan::data {

constexpr int64_t kIgnore = -100;  // label of a position without loss (as in HF)

enum class Format { alpaca, text, jsonl_text };
const char* format_name(Format f);
// "auto" looks at the content: a JSON array or objects with "instruction" -> alpaca,
// objects with "text" -> jsonl_text, anything else -> text.
Format resolve_format(const std::string& path, const std::string& configured);

struct Record {
  std::string instruction, input, output;
};

// Errors name the file and the record index (0-based) of a malformed record.
std::vector<Record> read_alpaca(const std::string& path);
std::vector<std::string> read_documents(const std::string& path, Format format);

// The Stanford Alpaca prompt (with or without the input paragraph), ending in "### Response:";
// the response follows it directly, as in Stanford Alpaca's train.py.
std::string alpaca_prompt(const Record& r);

struct Example {
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;  // same length; kIgnore on the prompt
};

// <s> prompt response </s>: the prompt is tokenized alone to find where the response starts
// (as Stanford Alpaca does), labels are kIgnore up to there.
Example tokenize_instruction(const model::Tokenizer& tok, const Record& r);
Example tokenize_document(const model::Tokenizer& tok, const std::string& text);

// Fixed-length rows of seq_len tokens.
struct Sequences {
  int64_t seq_len = 0;
  std::vector<int64_t> ids;     // (rows, seq_len), row-major
  std::vector<int64_t> labels;  // (rows, seq_len)
  int64_t examples = 0;         // examples that went in
  int64_t truncated = 0;        // examples cut to seq_len
  int64_t loss_tokens = 0;      // labels != kIgnore (after the shift by one, as the loss sees them)
  int64_t rows() const { return seq_len ? static_cast<int64_t>(ids.size()) / seq_len : 0; }
};

// Each example truncated to seq_len, then either packed back to back (pack = true; the last
// partial row is padded) or one example per row padded with `pad_id` (labels kIgnore).
Sequences make_sequences(const std::vector<Example>& examples, int64_t seq_len, bool pack,
                         int64_t pad_id);

// Splits [0, n) into (train, held_out) indices: a seeded permutation, the first
// round(n * fraction) go to held_out (at least one when fraction > 0 and n > 1).
std::pair<std::vector<int64_t>, std::vector<int64_t>> split_held_out(int64_t n, double fraction,
                                                                     uint64_t seed);

// Everything a run needs from [data]: train and held-out sequences.
struct DataSplit {
  Format format;
  Sequences train, held_out;
};
DataSplit load_data(const std::string& path, const std::string& format, const model::Tokenizer& tok,
                    int64_t seq_len, bool pack, double held_out_fraction, uint64_t seed);

}  // namespace spartan::data
