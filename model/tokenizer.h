// A LLaMA sentencepiece tokenizer (tokenizer.model), encoding as Hugging Face's LlamaTokenizer
// does by default: <s> (BOS) in front, no </s> (EOS) unless asked, no padding token (callers pad
// with EOS and mask the labels). No torch here.
//
// libsentencepiece is reached through a small shared library loaded at run time in a link-map
// namespace of its own (see
// model/sentencepiece_shim.cpp for why); its path is fixed at build time and can be overridden
// with the environment variable SPARTAN_SENTENCEPIECE_SHIM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spartan::model {

class Tokenizer {
 public:
  explicit Tokenizer(const std::string& model_path);  // throws spartan::Error
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text, bool add_bos = true,
                              bool add_eos = false) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const { return vocab_size_; }
  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  const std::string& path() const { return path_; }

  // Trains a LLaMA-style BPE model (byte fallback, split digits, identity normalisation,
  // unk=0 bos=1 eos=2) on text files and writes <model_prefix>.model. Deterministic.
  static void train(const std::vector<std::string>& text_files, const std::string& model_prefix,
                    int64_t vocab_size);

 private:
  std::string path_;
  void* handle_ = nullptr;
  int64_t vocab_size_ = 0, bos_id_ = -1, eos_id_ = -1;
};

}  // namespace spartan::model
