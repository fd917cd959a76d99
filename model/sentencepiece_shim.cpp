// A C interface over libsentencepiece, built as its own shared library and loaded by
// model/tokenizer.cpp with dlmopen into a link-map namespace of its own.
//
// Why: Debian's libsentencepiece carries its own copy of protobuf-lite and exports its symbols;
// libtorch loads the system libprotobuf. Linked into one executable, libprotobuf's static
// initialisers bind to sentencepiece's copy and crash before main. (RTLD_DEEPBIND is not enough:
// sentencepiece then writes to an uninitialised std::cerr.) In its own namespace sentencepiece
// keeps its protobuf and its libstdc++ to itself; only C types cross, and memory the shim
// allocates is freed by the shim.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
char* copy(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}
sentencepiece::SentencePieceProcessor* sp(void* h) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h);
}
}  // namespace

extern "C" {

// A processor for `path`, or nullptr with *error set (free it with spartan_spm_free_string).
void* spartan_spm_open(const char* path, char** error) {
  auto* p = new sentencepiece::SentencePieceProcessor();
  auto status = p->Load(path);
  if (!status.ok()) {
    *error = copy(status.ToString());
    delete p;
    return nullptr;
  }
  return p;
}

void spartan_spm_close(void* h) { delete sp(h); }

// Encodes into out[0..cap); returns the number of ids (call again when it exceeds cap), or -1
// with *error set.
long long spartan_spm_encode(void* h, const char* text, size_t len, int* out, long long cap,
                             char** error) {
  std::vector<int> ids;
  auto status = sp(h)->Encode(std::string(text, len), &ids);
  if (!status.ok()) {
    *error = copy(status.ToString());
    return -1;
  }
  for (long long i = 0; i < static_cast<long long>(ids.size()) && i < cap; ++i) out[i] = ids[i];
  return static_cast<long long>(ids.size());
}

char* spartan_spm_decode(void* h, const int* ids, long long n) {
  std::string text;
  sp(h)->Decode(std::vector<int>(ids, ids + n), &text);
  return copy(text);
}

int spartan_spm_piece_size(void* h) { return sp(h)->GetPieceSize(); }
int spartan_spm_bos(void* h) { return sp(h)->bos_id(); }
int spartan_spm_eos(void* h) { return sp(h)->eos_id(); }

// Trains with sentencepiece's flag string; nullptr on success, else the error.
char* spartan_spm_train(const char* args) {
  auto status = sentencepiece::SentencePieceTrainer::Train(args);
  return status.ok() ? nullptr : copy(status.ToString());
}

void spartan_spm_free_string(char* s) { std::free(s); }

}  // extern "C"
