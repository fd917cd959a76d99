// Data: formats, malformed records, prompt and loss mask, packing, held-out split, sampler.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "common/error.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "tests/test_paths.h"

using namespace spartan::data;
using spartan::model::Tokenizer;

namespace {

const Tokenizer& tok() {
  static Tokenizer t(spartan::testing_support::fixtures_dir() + "/tokenizer/tokenizer.model");
  return t;
}

std::string write(const std::string& name, const std::string& text) {
  std::string path = testing::TempDir() + "spartan_data_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const spartan::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Data, AlpacaJsonAndJsonlReadTheSameRecords) {
  auto a = read_alpaca(write("a.json", R"([{"instruction": "Say hi", "input": "", "output": "Hi"},
    {"instruction": "Übersetze", "input": "cat 🐱", "output": "Katze"}])"));
  auto b = read_alpaca(write("b.jsonl",
                             "{\"instruction\": \"Say hi\", \"output\": \"Hi\"}\n\n"
                             "{\"instruction\": \"Übersetze\", \"input\": \"cat 🐱\", "
                             "\"output\": \"Katze\"}\n"));
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a[i].instruction, b[i].instruction);
    EXPECT_EQ(a[i].input, b[i].input);
    EXPECT_EQ(a[i].output, b[i].output);
  }
  EXPECT_EQ(a[1].input, "cat 🐱");
}

TEST(Data, MalformedRecordsNameFileAndIndex) {
  std::string p = write("bad1.json", R"([{"instruction": "a", "output": "b"},
    {"instruction": "c", "output": "d"}, {"instruction": "e", "output": ]})");
  EXPECT_NE(error_of([&] { read_alpaca(p); }).find(p + ", record 2"), std::string::npos)
      << error_of([&] { read_alpaca(p); });
  std::string q = write("bad2.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{oops\n");
  EXPECT_EQ(error_of([&] { read_alpaca(q); }).find("malformed record: not valid JSON"), 0u);
  EXPECT_NE(error_of([&] { read_alpaca(q); }).find(q + ", record 1, fix or remove that record"),
            std::string::npos);
  std::string r = write("bad3.json", R"([{"instruction": "a"}])");
  EXPECT_EQ(error_of([&] { read_alpaca(r); }),
            "malformed record: no 'output' field, " + r + ", record 0, fix or remove that record");
  std::string s = write("bad4.json", R"([{"instruction": "a", "output": "b"}, {"instruction": 3,
    "output": "b"}])");
  EXPECT_EQ(error_of([&] { read_alpaca(s); }),
            "malformed record: 'instruction' is number, not a string, " + s +
                ", record 1, fix or remove that record");
  std::string t = write("bad5.json", R"([{"instruction": "a", "output": "b"}, "text"])");
  EXPECT_NE(error_of([&] { read_alpaca(t); }).find("record 1"), std::string::npos);
}

TEST(Data, FormatDetection) {
  EXPECT_EQ(resolve_format(write("f1.json", "\n [ {\"instruction\": 1} ]"), "auto"),
            Format::alpaca);
  EXPECT_EQ(
      resolve_format(write("f2.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\n"), "auto"),
      Format::alpaca);
  EXPECT_EQ(resolve_format(write("f3.jsonl", "{\"text\": \"x\"}\n"), "auto"), Format::jsonl_text);
  EXPECT_EQ(resolve_format(write("f4.txt", "plain words\n"), "auto"), Format::text);
  EXPECT_EQ(resolve_format(write("f5.txt", "{\"text\": \"x\"}\n"), "text"), Format::text);
  // A .json/.jsonl file whose first record does not read is an error, not plain text.
  const auto refused = [](const std::string& file, const std::string& text,
                          const std::string& message) {
    try {
      resolve_format(write(file, text), "auto");
      ADD_FAILURE() << file << " was accepted";
    } catch (const spartan::Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  refused("bad_field.jsonl", "{\"instrction\": \"x\", \"output\": \"y\"}\n",
          "neither \"instruction\" (Alpaca) nor \"text\" (it has: instrction, output)");
  refused("trailing_comma.jsonl", "{\"instruction\": \"x\",}\n", "not one line of valid JSON");
  refused("pretty.json", "{\n  \"instruction\": \"x\"\n}\n", "not one line of valid JSON");
  refused("bad_utf8.jsonl", "{\"instruction\": \"\xff\xfe\"}\n", "not one line of valid JSON");
  EXPECT_EQ(resolve_format(write("f7.json", "{\"instrction\": \"x\"}\n"), "text"),
            Format::text);  // an explicit format is honoured
  auto docs = read_documents(write("f6.txt", "one\n\n  \ntwo words\n"), Format::text);
  EXPECT_EQ(docs, (std::vector<std::string>{"one", "two words"}));
}

TEST(Data, PromptTemplateWithAndWithoutInput) {
  EXPECT_EQ(alpaca_prompt({"Add.", "", "x"}),
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nAdd.\n\n### Response:");
  EXPECT_EQ(alpaca_prompt({"Add.", "1 2", "x"}),
            "Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nAdd.\n\n### Input:\n1 2\n\n### Response:");
}

TEST(Data, LossMaskCoversOnlyTheResponse) {
  Record r{"Name a colour.", "", " Blue is a colour."};
  Example e = tokenize_instruction(tok(), r);
  ASSERT_EQ(e.ids.size(), e.labels.size());
  EXPECT_EQ(e.ids.front(), tok().bos_id());
  EXPECT_EQ(e.ids.back(), tok().eos_id());
  std::vector<int64_t> scored;
  size_t first_scored = e.labels.size();
  for (size_t i = 0; i < e.labels.size(); ++i)
    if (e.labels[i] != kIgnore) {
      scored.push_back(e.labels[i]);
      first_scored = std::min(first_scored, i);
      EXPECT_EQ(e.labels[i], e.ids[i]);
    }
  // Everything before the response is masked, everything after is scored.
  EXPECT_EQ(first_scored, tok().encode(alpaca_prompt(r)).size());
  EXPECT_EQ(scored.back(), tok().eos_id());
  scored.pop_back();
  EXPECT_EQ(tok().decode(scored), "Blue is a colour.");
}

TEST(Data, PackingAndPaddingWithTruncationCounted) {
  std::vector<Example> ex = {{{1, 10, 11, 2}, {kIgnore, kIgnore, 11, 2}},
                             {{1, 20, 21, 22, 23, 24, 25, 2}, {1, 20, 21, 22, 23, 24, 25, 2}},
                             {{1, 30, 2}, {1, 30, 2}}};
  Sequences packed = make_sequences(ex, 6, /*pack=*/true, /*pad_id=*/2);
  EXPECT_EQ(packed.truncated, 1);  // the 8-token example is cut to 6
  EXPECT_EQ(packed.rows(), 3);     // 4 + 6 + 3 = 13 tokens -> 3 rows of 6, last padded
  EXPECT_EQ(packed.ids,
            (std::vector<int64_t>{1, 10, 11, 2, 1, 20, 21, 22, 23, 24, 1, 30, 2, 2, 2, 2, 2, 2}));
  EXPECT_EQ(packed.labels[13], kIgnore);
  EXPECT_EQ(packed.labels[0], kIgnore);
  Sequences padded = make_sequences(ex, 6, /*pack=*/false, /*pad_id=*/2);
  EXPECT_EQ(padded.rows(), 3);
  EXPECT_EQ(std::vector<int64_t>(padded.ids.begin(), padded.ids.begin() + 6),
            (std::vector<int64_t>{1, 10, 11, 2, 2, 2}));
  EXPECT_EQ(padded.labels[4], kIgnore);
  // Loss tokens exclude each row's first position (nothing predicts it).
  EXPECT_EQ(padded.loss_tokens, 2 + 5 + 2);
}

TEST(Data, EmptyInputFieldUsesTheNoInputPrompt) {
  std::string p =
      write("empty_input.json", R"([{"instruction": "Hi", "input": "", "output": "Yo"}])");
  auto recs = read_alpaca(p);
  EXPECT_EQ(alpaca_prompt(recs[0]).find("### Input"), std::string::npos);
}

TEST(Data, HeldOutSplitIsADeterministicPartition) {
  auto [train, held] = split_held_out(100, 0.1, 7);
  EXPECT_EQ(held.size(), 10u);
  EXPECT_EQ(train.size(), 90u);
  std::set<int64_t> all(train.begin(), train.end());
  all.insert(held.begin(), held.end());
  EXPECT_EQ(all.size(), 100u);
  EXPECT_EQ(split_held_out(100, 0.1, 7).second, held);
  EXPECT_NE(split_held_out(100, 0.1, 8).second, held);
  EXPECT_EQ(split_held_out(5, 0.01, 7).second.size(), 1u);  // at least one held out
}

TEST(Data, LoadDataOnSharedAlpaca) {
  const std::string path = spartan::testing_support::shared_data_dir() + "/alpaca_en_demo.json";
  if (!std::ifstream(path)) GTEST_SKIP() << "needs the shared test data at " << path;
  DataSplit d = load_data(path, "auto", tok(), 128, true, 0.05, 1);
  EXPECT_EQ(d.format, Format::alpaca);
  EXPECT_EQ(d.train.examples + d.held_out.examples, 999);
  EXPECT_EQ(d.held_out.examples, 50);
  EXPECT_GT(d.train.truncated, 0);
  EXPECT_GT(d.train.loss_tokens, 0);
}

TEST(Sampler, PermutationIsFixedBySeed) {
  auto p = permutation(10, 42);
  EXPECT_EQ(p, permutation(10, 42));
  EXPECT_NE(p, permutation(10, 43));
  std::set<int64_t> s(p.begin(), p.end());
  EXPECT_EQ(s.size(), 10u);
}

TEST(Sampler, DataParallelRanksSplitEachGlobalBatch) {
  Sampler one(40, 8, 0, 1, 5, true);
  Sampler r0(40, 8, 0, 2, 5, true), r1(40, 8, 1, 2, 5, true);
  for (int step = 0; step < 12; ++step) {  // crosses epoch boundaries (5 steps per epoch)
    auto all = one.next(), a = r0.next(), b = r1.next();
    a.insert(a.end(), b.begin(), b.end());
    EXPECT_EQ(a, all) << "step " << step;
  }
  EXPECT_EQ(one.position(), (Sampler::Position{2, 2}));
}

TEST(Sampler, EpochsCoverEveryRowOnceAndReshuffle) {
  Sampler s(12, 4, 0, 1, 9, true);
  std::vector<int64_t> e0, e1;
  for (int i = 0; i < 3; ++i) {
    auto b = s.next();
    e0.insert(e0.end(), b.begin(), b.end());
  }
  for (int i = 0; i < 3; ++i) {
    auto b = s.next();
    e1.insert(e1.end(), b.begin(), b.end());
  }
  EXPECT_EQ(std::set<int64_t>(e0.begin(), e0.end()).size(), 12u);
  EXPECT_NE(e0, e1);
  Sampler plain(12, 4, 0, 1, 9, false);
  EXPECT_EQ(plain.next(), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(Sampler, RestoredPositionContinuesIdentically) {
  Sampler a(30, 6, 0, 1, 3, true);
  for (int i = 0; i < 7; ++i) a.next();
  Sampler b(30, 6, 0, 1, 3, true);
  b.restore(a.position());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a.next(), b.next());
}

TEST(Sampler, TooLittleDataIsAClearError) {
  EXPECT_NE(error_of([] { Sampler s(3, 8, 0, 1, 1, true); }).find("fewer than one global batch"),
            std::string::npos);
}
