// spartan tokenizer train / spartan data dictd: preparing text for a run.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/dictd.h"
#include "data/sampler.h"
#include "launcher/commands.h"
#include "model/tokenizer.h"

namespace spartan::launcher {
namespace {

struct DictdOptions {
  std::string dict, text_out, alpaca_out, question = "What does \"{}\" mean in hacker jargon?";
  int64_t max_entries = 0;
  uint64_t seed = 1234;
};

// A dictd dictionary as plain text (one "headword: definition" per line) and/or as Alpaca
// instructions ("What does X mean?" -> the definition), entries in a seeded shuffled order.
void dictd(const DictdOptions& o) {
  if (o.text_out.empty() && o.alpaca_out.empty())
    throw UsageError("nothing to write", "spartan data dictd", "pass --text and/or --alpaca");
  auto entries = data::read_dictd(o.dict);
  auto order = data::permutation(static_cast<int64_t>(entries.size()), o.seed);
  if (o.max_entries > 0 && o.max_entries < static_cast<int64_t>(order.size()))
    order.resize(o.max_entries);
  const auto brace = o.question.find("{}");
  if (brace == std::string::npos)
    throw UsageError("--question has no {} for the headword", "command line",
                     "write e.g. \"What does {} mean?\"");
  if (!o.text_out.empty()) {
    std::ofstream out(o.text_out);
    for (int64_t i : order) out << entries[i].headword << ": " << entries[i].definition << "\n";
    if (!out) throw Error("cannot write", o.text_out, "check the folder and free space");
  }
  if (!o.alpaca_out.empty()) {
    std::ofstream out(o.alpaca_out);
    for (int64_t i : order) {
      std::string q = o.question;
      q.replace(brace, 2, entries[i].headword);
      out << nlohmann::json{{"instruction", q}, {"input", ""}, {"output", entries[i].definition}}
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
          << "\n";
    }
    if (!out) throw Error("cannot write", o.alpaca_out, "check the folder and free space");
  }
  std::printf("%s: %zu of %zu entries written\n", o.dict.c_str(), order.size(), entries.size());
}

}  // namespace

void add_data_commands(CLI::App& app) {
  CLI::App* tok = app.add_subcommand("tokenizer", "train a LLaMA-style sentencepiece tokenizer");
  tok->require_subcommand(1);
  struct TrainOptions {
    std::vector<std::string> inputs;
    std::string out;
    int64_t vocab = 2000;
  };
  auto t = std::make_shared<TrainOptions>();
  CLI::App* train = tok->add_subcommand(
      "train", "BPE with byte fallback, split digits, unk/bos/eos = 0/1/2 (as LLaMA)");
  train->add_option("--input", t->inputs, "text file(s), one sentence or document per line")
      ->required();
  train->add_option("--vocab-size", t->vocab, "number of pieces (default 2000)");
  train->add_option("--out", t->out, "output path of tokenizer.model")->required();
  train->callback([t] {
    std::string prefix = t->out;
    const std::string suffix = ".model";
    if (prefix.size() > suffix.size() && prefix.compare(prefix.size() - 6, 6, suffix) == 0)
      prefix.resize(prefix.size() - 6);
    else
      throw UsageError("--out must end in .model", t->out, "e.g. --out run/tokenizer.model");
    model::Tokenizer::train(t->inputs, prefix, t->vocab);
    std::remove((prefix + ".vocab").c_str());
    model::Tokenizer check(t->out);
    std::printf("wrote %s (%lld pieces)\n", t->out.c_str(),
                static_cast<long long>(check.vocab_size()));
  });

  CLI::App* data = app.add_subcommand("data", "build training text from installed dictionaries");
  data->require_subcommand(1);
  auto d = std::make_shared<DictdOptions>();
  CLI::App* dict = data->add_subcommand(
      "dictd", "a dictd dictionary (e.g. /usr/share/dictd/jargon) as text and/or Alpaca JSONL");
  dict->add_option("--dict", d->dict, "path prefix of NAME.index and NAME.dict.dz")->required();
  dict->add_option("--text", d->text_out, "write 'headword: definition' lines here");
  dict->add_option("--alpaca", d->alpaca_out, "write Alpaca JSONL instructions here");
  dict->add_option("--question", d->question, "instruction template; {} is the headword");
  dict->add_option("--max-entries", d->max_entries, "keep this many (seeded random) entries");
  dict->add_option("--seed", d->seed, "seed of the entry order");
  dict->callback([d] { dictd(*d); });
}

}  // namespace spartan::launcher
