#include "model/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "common/error.h"

namespace spartan::model {

Tokenizer::Tokenizer(const std::string& model_path)
    : path_(model_path), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  auto status = sp_->Load(model_path);
  if (!status.ok())
    throw Error("cannot load sentencepiece model (" + status.ToString() + ")", model_path,
                "pass a LLaMA tokenizer.model");
  if (sp_->bos_id() < 0 || sp_->eos_id() < 0)
    throw Error("sentencepiece model has no BOS or EOS piece", model_path,
                "train it with bos_id and eos_id set, as LLaMA's is");
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos,
                                       bool add_eos) const {
  std::vector<int> pieces;
  auto status = sp_->Encode(text, &pieces);
  if (!status.ok())
    throw Error("cannot encode text (" + status.ToString() + ")", path_, "check the input text");
  std::vector<int64_t> ids;
  ids.reserve(pieces.size() + 2);
  if (add_bos) ids.push_back(sp_->bos_id());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_eos) ids.push_back(sp_->eos_id());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> pieces(ids.begin(), ids.end());
  std::string text;
  sp_->Decode(pieces, &text);
  return text;
}

int64_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int64_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int64_t Tokenizer::eos_id() const { return sp_->eos_id(); }

void Tokenizer::train(const std::vector<std::string>& text_files, const std::string& model_prefix,
                      int64_t vocab_size) {
  std::string inputs;
  for (const auto& f : text_files) inputs += (inputs.empty() ? "" : ",") + f;
  const std::string args =
      "--input=" + inputs + " --model_prefix=" + model_prefix +
      " --vocab_size=" + std::to_string(vocab_size) +
      " --model_type=bpe --byte_fallback=true --split_digits=true --add_dummy_prefix=true"
      " --normalization_rule_name=identity --remove_extra_whitespaces=false"
      " --allow_whitespace_only_pieces=true --character_coverage=0.99995"
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=1"
      " --max_sentence_length=65536 --input_sentence_size=2000000 --shuffle_input_sentence=false"
      " --minloglevel=2";
  auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok())
    throw Error("tokenizer training failed (" + status.ToString() + ")", inputs,
                "check the text files and the vocabulary size");
}

}  // namespace spartan::model
