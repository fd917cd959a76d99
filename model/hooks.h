// PEFT-Ref hook points of the LLaMA model (DESIGN.md §3).
//
// Every adapter method is a torch module that implements one of these interfaces and is attached
// to the model at its workspace; the model's own code never changes for a new method.
//
//   workspace                         interface           methods
//   a linear projection               LinearAdapter       LoRA, SoRA, SPP, (IA)^3
//   after the attention / FFN block   BlockAdapter        Houlsby, Compacter, tiny-attention
//   the input embeddings              EmbeddingAdapter    prompt tuning
#pragma once

#include <string>

#include <torch/torch.h>

namespace spartan::model {

enum class Proj { q, k, v, o, gate, up, down };
constexpr Proj kAllProjections[] = {Proj::q, Proj::k, Proj::v, Proj::o,
                                    Proj::gate, Proj::up, Proj::down};
const char* proj_name(Proj p);  // "q", "k", ..., as in configs
bool parse_proj(const std::string& name, Proj* out);
// The Hugging Face module name of a projection: "model.layers.3.self_attn.q_proj".
std::string projection_name(int64_t layer, Proj p);

// Replaces a projection's forward: given the input and the frozen weight (out, in), returns the
// adapted output. Parallel insertion returns x·Wᵀ + Δ(x); rescaling returns (x·Wᵀ) ⊙ l.
class LinearAdapter : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x,        // (B, T, in)
                                const torch::Tensor& weight)   // (out, in), frozen
      = 0;                                                     // -> (B, T, out)
};

// Sees a block's (normalised) input and output before the residual addition and returns the
// output to add: direct addition methods return block_output + f(block_output).
class BlockAdapter : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& block_input,   // (B, T, H)
                                const torch::Tensor& block_output)  // (B, T, H)
      = 0;                                                          // -> (B, T, H)
};

// Rewrites the input embeddings; prompt tuning concatenates num_virtual_tokens() learned vectors
// in front. The model drops the outputs of those positions again, so logits stay (B, T, V).
class EmbeddingAdapter : public torch::nn::Module {
 public:
  virtual int64_t num_virtual_tokens() const = 0;
  virtual torch::Tensor forward(const torch::Tensor& embeds)  // (B, T, H)
      = 0;                                                    // -> (B, P + T, H)
};

}  // namespace spartan::model
