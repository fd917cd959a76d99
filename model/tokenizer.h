// A LLaMA sentencepiece tokenizer (tokenizer.model), encoding as Hugging Face's LlamaTokenizer
// does by default: <s> (BOS) in front, no </s> (EOS) unless asked, no padding token (callers pad
// with EOS and mask the labels). No torch here, and no sentencepiece in this header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace spartan::model {

class Tokenizer {
 public:
  explicit Tokenizer(const std::string& model_path);  // throws spartan::Error
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<int64_t> encode(const std::string& text, bool add_bos = true,
                              bool add_eos = false) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;
  const std::string& path() const { return path_; }

  // Trains a LLaMA-style BPE model (byte fallback, split digits, identity normalisation,
  // unk=0 bos=1 eos=2) on text files and writes <model_prefix>.model. Deterministic.
  static void train(const std::vector<std::string>& text_files, const std::string& model_prefix,
                    int64_t vocab_size);

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace spartan::model
