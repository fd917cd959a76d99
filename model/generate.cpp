#include "model/generate.h"

#include <algorithm>
#include <chrono>

namespace spartan::model {
namespace {

// The next token from the last position's logits (V,), fp32.
int64_t pick(const torch::Tensor& logits, const GenerateOptions& o, torch::Generator& gen) {
  if (o.temperature <= 0) return logits.argmax().item<int64_t>();
  auto scores = logits / o.temperature;
  const int64_t V = scores.size(0);
  if (o.top_k > 0 && o.top_k < V) {  // keep the k largest
    const auto kth = std::get<0>(scores.topk(o.top_k)).min();
    scores = scores.masked_fill(scores < kth, -std::numeric_limits<float>::infinity());
  }
  if (o.top_p < 1.0) {  // the smallest set whose probability reaches top_p
    auto [sorted, order] = scores.sort(/*dim=*/0, /*descending=*/false);
    const auto cumulative = sorted.softmax(0).cumsum(0);
    auto drop = cumulative <= (1.0 - o.top_p);
    drop[V - 1] = false;  // always keep the most likely
    scores =
        scores.scatter(0, order, sorted.masked_fill(drop, -std::numeric_limits<float>::infinity()));
  }
  return torch::multinomial(scores.softmax(0), 1, /*replacement=*/false, gen).item<int64_t>();
}

}  // namespace

Generation generate(Llama& model, std::vector<int64_t> prompt, const GenerateOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  model->eval();
  Generation g;
  const int64_t room = model->arch().max_position_embeddings;
  const int64_t new_tokens = std::min<int64_t>(o.max_new_tokens, std::max<int64_t>(room - 1, 0));
  // Cut from the left, keeping the first token (BOS), so that prompt + new tokens fit.
  const int64_t keep = std::max<int64_t>(1, room - new_tokens);
  if (static_cast<int64_t>(prompt.size()) > keep) {
    g.cut_tokens = static_cast<int64_t>(prompt.size()) - keep;
    prompt.erase(prompt.begin() + 1,
                 prompt.begin() + (static_cast<int64_t>(prompt.size()) - keep + 1));
  }
  g.prompt_tokens = static_cast<int64_t>(prompt.size());
  auto gen = torch::make_generator<torch::CPUGeneratorImpl>(o.seed);
  const bool cached = o.use_cache && model->supports_kv_cache();
  KvCache cache;
  std::vector<int64_t> sequence = prompt;
  auto ids = torch::tensor(prompt, torch::kInt64).unsqueeze(0);
  for (int64_t i = 0; i < new_tokens; ++i) {
    const auto logits = cached
                            ? model->forward(ids, &cache)
                            : model->forward(torch::tensor(sequence, torch::kInt64).unsqueeze(0));
    const int64_t next = pick(logits[0][logits.size(1) - 1], o, gen);
    if (i == 0)
      g.prompt_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    g.tokens.push_back(next);
    sequence.push_back(next);
    if (next == o.eos_id) {
      g.stopped_at_eos = true;
      break;
    }
    ids = torch::tensor({next}, torch::kInt64).view({1, 1});
  }
  g.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return g;
}

}  // namespace spartan::model
