// Tokenizer: ids equal Hugging Face's LlamaTokenizer on real text; training works.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/tokenizer.h"
#include "tests/test_paths.h"

using spartan::model::Tokenizer;

namespace {
const std::string kFixture = spartan::testing_support::fixtures_dir() + "/tokenizer";
const std::string kData = spartan::testing_support::shared_data_dir();

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}
}  // namespace

// Golden: 400 texts of ../shared/data (Alpaca fields, C4 documents) encoded by transformers'
// LlamaTokenizer (legacy default, BOS added) with the same tokenizer.model.
TEST(TokenizerGolden, IdsEqualLlamaTokenizer) {
  if (!exists(kData + "/alpaca_en_demo.json"))
    GTEST_SKIP() << "needs the shared test data at " << kData;
  Tokenizer tok(kFixture + "/tokenizer.model");
  std::ifstream in(kFixture + "/golden_ids.json");
  auto golden = nlohmann::json::parse(in);
  std::ifstream alpaca_in(kData + "/alpaca_en_demo.json");
  auto alpaca = nlohmann::json::parse(alpaca_in);
  std::vector<std::string> c4;
  std::ifstream c4_in(kData + "/c4_demo.jsonl");
  for (std::string line; std::getline(c4_in, line);)
    c4.push_back(nlohmann::json::parse(line)["text"].get<std::string>());

  int checked = 0;
  for (const auto& c : golden["cases"]) {
    const int record = c["record"].get<int>();
    const std::string field = c["field"].get<std::string>();
    const std::string text =
        c["file"] == "c4_demo.jsonl" ? c4.at(record) : alpaca.at(record)[field].get<std::string>();
    auto expected = c["ids"].get<std::vector<int64_t>>();
    ASSERT_EQ(tok.encode(text), expected) << c["file"] << " record " << record << " " << field;
    ++checked;
  }
  EXPECT_EQ(checked, 400);
}

TEST(Tokenizer, SpecialIdsAndRoundTrip) {
  Tokenizer tok(kFixture + "/tokenizer.model");
  EXPECT_EQ(tok.vocab_size(), 1000);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  auto ids = tok.encode("Hello, wörld 2024!", true, true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tok.decode(ids), "Hello, wörld 2024!");  // byte fallback covers any character
  EXPECT_EQ(tok.encode("", false, false).size(), 0u);
}

TEST(Tokenizer, TrainsADeterministicModel) {
  const std::string dir = testing::TempDir();
  {
    std::ofstream out(dir + "spartan_tok_corpus.txt");
    for (int i = 0; i < 400; ++i)
      out << "the quick brown fox " << i << " jumps over the lazy dog number " << i * 7 << "\n"
          << "a tokenizer learns pieces from text like this line " << i % 13 << "\n";
  }
  Tokenizer::train({dir + "spartan_tok_corpus.txt"}, dir + "spartan_tok_a", 300);
  Tokenizer::train({dir + "spartan_tok_corpus.txt"}, dir + "spartan_tok_b", 300);
  Tokenizer a(dir + "spartan_tok_a.model"), b(dir + "spartan_tok_b.model");
  EXPECT_EQ(a.vocab_size(), 300);
  const std::string text = "the lazy fox learns 42 pieces";
  EXPECT_EQ(a.encode(text), b.encode(text));
  EXPECT_EQ(a.decode(a.encode(text)), text);
  EXPECT_LT(a.encode(text).size(), text.size());  // pieces longer than bytes
}

TEST(Tokenizer, MissingModelIsAClearError) {
  try {
    Tokenizer tok("/nonexistent/tokenizer.model");
    FAIL();
  } catch (const spartan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer model file here"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.model"), std::string::npos);
  }
}

// A folder given as the tokenizer used to abort the process inside sentencepiece.
TEST(Tokenizer, FolderIsAClearError) {
  try {
    Tokenizer tok(kFixture);
    FAIL();
  } catch (const spartan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("the tokenizer path is a folder"), std::string::npos);
  }
}

TEST(Tokenizer, FileThatIsNoModelIsAClearError) {
  try {
    Tokenizer tok(kFixture + "/golden_ids.json");
    FAIL();
  } catch (const spartan::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot load sentencepiece model"), std::string::npos);
  }
}
