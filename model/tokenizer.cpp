#include "model/tokenizer.h"

#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // dlmopen
#endif
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>

#include "common/error.h"

namespace spartan::model {
namespace {

// The shim's functions, resolved once.
struct Shim {
  void* (*open)(const char*, char**);
  void (*close)(void*);
  long long (*encode)(void*, const char*, size_t, int*, long long, char**);
  char* (*decode)(void*, const int*, long long);
  int (*piece_size)(void*);
  int (*bos)(void*);
  int (*eos)(void*);
  char* (*train)(const char*);
  void (*free_string)(char*);
};

template <class F>
void resolve(void* lib, const char* name, F* out, const std::string& path) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out)
    throw Error(std::string("symbol ") + name + " missing from the sentencepiece shim", path,
                "rebuild spartan");
}

// $SPARTAN_SENTENCEPIECE_SHIM; else ../lib/ beside the executable, where a bundle
// (scripts/gpu-bundle) keeps it; else where the build put it.
std::string shim_path() {
  const char* env = std::getenv("SPARTAN_SENTENCEPIECE_SHIM");
  if (env && *env) return env;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto beside = exe.parent_path().parent_path() / "lib" / "libspartan_sentencepiece.so";
    if (std::filesystem::is_regular_file(beside, ec)) return beside.string();
  }
  return SPARTAN_SENTENCEPIECE_SHIM;
}

const Shim& shim() {
  static const Shim s = [] {
    const std::string path = shim_path();
    // A link-map namespace of its own: the shim, libsentencepiece and their libstdc++ load
    // apart from libtorch's libprotobuf. Only C types cross the boundary, and strings are
    // freed by the shim that allocated them.
    void* lib = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib)
      throw Error(std::string("cannot load the sentencepiece shim (") + dlerror() + ")", path,
                  "rebuild spartan, or point SPARTAN_SENTENCEPIECE_SHIM at "
                  "libspartan_sentencepiece.so");
    Shim r{};
    resolve(lib, "spartan_spm_open", &r.open, path);
    resolve(lib, "spartan_spm_close", &r.close, path);
    resolve(lib, "spartan_spm_encode", &r.encode, path);
    resolve(lib, "spartan_spm_decode", &r.decode, path);
    resolve(lib, "spartan_spm_piece_size", &r.piece_size, path);
    resolve(lib, "spartan_spm_bos", &r.bos, path);
    resolve(lib, "spartan_spm_eos", &r.eos, path);
    resolve(lib, "spartan_spm_train", &r.train, path);
    resolve(lib, "spartan_spm_free_string", &r.free_string, path);
    return r;
  }();
  return s;
}

std::string take(char* s) {
  std::string out = s ? s : "";
  shim().free_string(s);
  return out;
}

}  // namespace

Tokenizer::Tokenizer(const std::string& model_path) : path_(model_path) {
  // sentencepiece aborts the process on some paths (a folder): only a regular file goes to it.
  std::error_code ec;
  if (std::filesystem::is_directory(model_path, ec))
    throw Error("the tokenizer path is a folder, not a sentencepiece model", model_path,
                "pass the tokenizer.model file itself");
  if (!std::filesystem::is_regular_file(model_path, ec))
    throw Error("no tokenizer model file here", model_path, "pass a LLaMA tokenizer.model");
  char* error = nullptr;
  handle_ = shim().open(model_path.c_str(), &error);
  if (!handle_)
    throw Error("cannot load sentencepiece model (" + take(error) + ")", model_path,
                "pass a LLaMA tokenizer.model");
  vocab_size_ = shim().piece_size(handle_);
  bos_id_ = shim().bos(handle_);
  eos_id_ = shim().eos(handle_);
  if (bos_id_ < 0 || eos_id_ < 0) {
    shim().close(handle_);
    throw Error("sentencepiece model has no BOS or EOS piece", model_path,
                "train it with bos_id and eos_id set, as LLaMA's is");
  }
}

Tokenizer::~Tokenizer() {
  if (handle_) shim().close(handle_);
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  std::vector<int> pieces(text.size() + 16);  // byte fallback: at most one piece per byte
  char* error = nullptr;
  long long n = shim().encode(handle_, text.data(), text.size(), pieces.data(),
                              static_cast<long long>(pieces.size()), &error);
  if (n < 0) throw Error("cannot encode text (" + take(error) + ")", path_, "check the input text");
  if (n > static_cast<long long>(pieces.size())) {
    pieces.resize(n);
    n = shim().encode(handle_, text.data(), text.size(), pieces.data(), n, &error);
  }
  std::vector<int64_t> ids;
  ids.reserve(n + 2);
  if (add_bos) ids.push_back(bos_id_);
  ids.insert(ids.end(), pieces.begin(), pieces.begin() + n);
  if (add_eos) ids.push_back(eos_id_);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> pieces(ids.begin(), ids.end());
  return take(shim().decode(handle_, pieces.data(), static_cast<long long>(pieces.size())));
}

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
  char* error = shim().train(args.c_str());
  if (error)
    throw Error("tokenizer training failed (" + take(error) + ")", inputs,
                "check the text files and the vocabulary size");
}

}  // namespace spartan::model
