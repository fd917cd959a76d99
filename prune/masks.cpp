#include "prune/masks.h"

#include <sstream>

#include "common/error.h"

namespace spartan::prune {

std::string Pattern::str() const {
  return nm() ? std::to_string(n) + ":" + std::to_string(m) : "unstructured";
}

Pattern parse_pattern(const std::string& text) {
  if (text == "unstructured") return {};
  Pattern p;
  char colon = 0, extra = 0;
  std::istringstream in(text);
  if (!(in >> p.n >> colon >> p.m) || colon != ':' || (in >> extra) || p.n <= 0 || p.m <= 0 ||
      p.n >= p.m)
    throw UsageError("pattern '" + text + "' is neither unstructured nor N:M with 0 < N < M",
                     "[prune] pattern", "write \"unstructured\" or e.g. \"2:4\"");
  return p;
}

torch::Tensor nm_mask(const torch::Tensor& scores, Pattern p) {
  const int64_t rows = scores.size(0), cols = scores.size(1);
  if (cols % p.m != 0)
    throw UsageError("input dimension " + std::to_string(cols) +
                         " is not a multiple of M = " + std::to_string(p.m),
                     "[prune] pattern " + p.str(), "choose M dividing every projection's input");
  auto groups = scores.reshape({rows, cols / p.m, p.m});
  auto lowest = std::get<1>(groups.topk(p.m - p.n, -1, /*largest=*/false));
  return torch::zeros_like(groups, torch::kBool).scatter_(-1, lowest, true).reshape({rows, cols});
}

torch::Tensor ratio_mask(const torch::Tensor& scores, double sparsity, bool per_row) {
  auto flat = per_row ? scores : scores.reshape({1, -1});
  const int64_t k = static_cast<int64_t>(flat.size(1) * sparsity);
  auto mask = torch::zeros_like(flat, torch::kBool);
  if (k > 0) {
    auto lowest = std::get<1>(flat.topk(k, 1, /*largest=*/false));
    mask.scatter_(1, lowest, true);
  }
  return mask.reshape(scores.sizes());
}

torch::Tensor magnitude_mask(const torch::Tensor& W, double sparsity, Pattern p) {
  auto scores = W.abs();
  return p.nm() ? nm_mask(scores, p) : ratio_mask(scores, sparsity, /*per_row=*/false);
}

torch::Tensor wanda_scores(const torch::Tensor& W, const torch::Tensor& x_sq_sum) {
  return W.abs() * x_sq_sum.sqrt().unsqueeze(0);
}

torch::Tensor wanda_mask(const torch::Tensor& W, const torch::Tensor& x_sq_sum, double sparsity,
                         Pattern p) {
  auto scores = wanda_scores(W, x_sq_sum);
  return p.nm() ? nm_mask(scores, p) : ratio_mask(scores, sparsity, /*per_row=*/true);
}

torch::Tensor sparsegpt_prune(torch::Tensor& W, torch::Tensor H, double sparsity, Pattern p,
                              int64_t blocksize, double percdamp) {
  torch::NoGradGuard no_grad;
  const int64_t cols = W.size(1);
  if (p.nm() && blocksize % p.m != 0)
    throw UsageError("blocksize " + std::to_string(blocksize) +
                         " is not a multiple of M = " + std::to_string(p.m),
                     "[prune] blocksize", "use a multiple of M");
  H = H.clone();
  // Inputs that were always zero carry no information: prune their weights, keep H invertible.
  auto dead = H.diagonal().eq(0);
  H.diagonal().masked_fill_(dead, 1.0);
  W.index_put_({torch::indexing::Slice(), dead}, 0.0);
  H.diagonal().add_(percdamp * H.diagonal().mean());
  // Upper Cholesky factor of H⁻¹: its rows give the OBS updates column by column.
  auto Hinv = at::linalg_cholesky(torch::cholesky_inverse(at::linalg_cholesky(H)))
                  .transpose(0, 1)
                  .contiguous();
  auto mask = torch::zeros_like(W, torch::kBool);
  const int64_t prune_per_group = p.m - p.n;
  for (int64_t i1 = 0; i1 < cols; i1 += blocksize) {
    const int64_t i2 = std::min(i1 + blocksize, cols), count = i2 - i1;
    auto W1 = W.slice(1, i1, i2).clone();
    auto Q1 = torch::zeros_like(W1), Err1 = torch::zeros_like(W1);
    auto Hinv1 = Hinv.slice(0, i1, i2).slice(1, i1, i2);
    auto d1 = Hinv1.diagonal();
    torch::Tensor mask1;
    if (!p.nm()) {  // the block's lowest (w / [H⁻¹]_jj)² over all its rows
      auto scores = W1.pow(2) / d1.pow(2).unsqueeze(0);
      mask1 = ratio_mask(scores, sparsity, /*per_row=*/false);
    } else {
      mask1 = torch::zeros_like(W1, torch::kBool);
    }
    for (int64_t i = 0; i < count; ++i) {
      auto w = W1.select(1, i);
      const double d = d1[i].item<double>();
      if (p.nm() && i % p.m == 0) {  // choose the group's mask from the updated weights
        auto scores = W1.slice(1, i, i + p.m).pow(2) / d1.slice(0, i, i + p.m).pow(2).unsqueeze(0);
        auto lowest = std::get<1>(scores.topk(prune_per_group, 1, /*largest=*/false));
        mask1.slice(1, i, i + p.m).scatter_(1, lowest, true);
      }
      auto q = w.masked_fill(mask1.select(1, i), 0.0);
      Q1.select(1, i).copy_(q);
      auto err = (w - q) / d;
      W1.slice(1, i).sub_(err.unsqueeze(1).matmul(Hinv1.select(0, i).slice(0, i).unsqueeze(0)));
      Err1.select(1, i).copy_(err);
    }
    W.slice(1, i1, i2).copy_(Q1);
    mask.slice(1, i1, i2).copy_(mask1);
    if (i2 < cols) W.slice(1, i2).sub_(Err1.matmul(Hinv.slice(0, i1, i2).slice(1, i2)));
  }
  mask.logical_or_(W.eq(0).logical_and(dead.unsqueeze(0)));
  return mask;
}

MaskCheck check_pattern(const torch::Tensor& W, Pattern p) {
  MaskCheck c;
  auto zeros = W.eq(0);
  c.sparsity = zeros.to(torch::kFloat64).mean().item<double>();
  if (p.nm()) {
    auto kept = zeros.logical_not().reshape({W.size(0), -1, p.m}).sum(-1);
    c.pattern_ok = kept.le(p.n).all().item<bool>();
  }
  return c;
}

}  // namespace spartan::prune
