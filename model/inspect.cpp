#include "model/inspect.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

#include "model/weights.h"

namespace spartan::model {

int64_t max_nonzeros_per_group(const std::vector<float>& values, int64_t cols, int64_t m) {
  int64_t worst = 0;
  const int64_t rows = static_cast<int64_t>(values.size()) / cols;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c0 = 0; c0 < cols; c0 += m) {
      int64_t nz = 0;
      for (int64_t c = c0; c < c0 + m; ++c) nz += values[r * cols + c] != 0.0f;
      worst = std::max(worst, nz);
    }
  return worst;
}

namespace {

bool is_projection(const std::string& name) {
  for (const char* p :
       {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
    if (name.find(std::string(".") + p + ".weight") != std::string::npos) return true;
  return false;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
  return out;
}

std::string human(int64_t n) {
  char buf[32];
  if (n >= 1000000000)
    std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1000000)
    std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1000)
    std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

}  // namespace

ModelStats inspect_model(const std::string& folder) {
  ModelStats stats;
  stats.folder = folder;
  stats.arch = read_hf_config(folder);
  WeightStore store(folder);
  for (const auto& name : store.names()) {
    const TensorInfo& info = store.info(name);
    TensorStats t;
    t.name = name;
    t.dtype = dtype_name(info.dtype);
    t.shape = info.shape;
    t.numel = info.numel();
    auto values = store.load(name, torch::kFloat32).contiguous();
    t.zeros = values.eq(0).sum().item<int64_t>();
    if (info.shape.size() == 2 && t.zeros > 0) {
      std::vector<float> v(values.data_ptr<float>(), values.data_ptr<float>() + t.numel);
      for (int64_t m : {4, 8, 16}) {
        if (info.shape[1] % m != 0) continue;
        int64_t n = max_nonzeros_per_group(v, info.shape[1], m);
        if (n < m) {
          t.nm = std::to_string(n) + ":" + std::to_string(m);
          break;
        }
      }
    }
    stats.num_parameters += t.numel;
    stats.zeros += t.zeros;
    if (is_projection(name)) {
      stats.linear_parameters += t.numel;
      stats.linear_zeros += t.zeros;
    }
    stats.tensors.push_back(std::move(t));
  }
  return stats;
}

std::string format_model_stats(const ModelStats& s) {
  const LlamaArch& a = s.arch;
  std::map<std::string, int64_t> by_dtype;
  for (const auto& t : s.tensors) by_dtype[t.dtype] += t.numel;
  std::ostringstream o;
  char line[256];
  o << "model        " << s.folder << "\n";
  o << "architecture LlamaForCausalLM: " << a.num_layers << " layers, hidden " << a.hidden_size
    << ", intermediate " << a.intermediate_size << ", heads " << a.num_heads << " (kv "
    << a.num_kv_heads << ", head_dim " << a.head_dim() << "), vocab " << a.vocab_size << "\n";
  o << "             rope_theta " << a.rope_theta << ", rms_norm_eps " << a.rms_norm_eps
    << ", max positions " << a.max_position_embeddings << ", "
    << (a.tie_word_embeddings ? "tied" : "untied") << " LM head\n";
  o << "parameters   " << s.num_parameters << " (" << human(s.num_parameters) << "; config.json "
    << "implies " << a.num_parameters() << ")\n";
  o << "dtype        ";
  for (const auto& [d, n] : by_dtype) o << d << " " << n << "  ";
  o << "(config.json: " << a.torch_dtype << ")\n";
  std::snprintf(line, sizeof line, "sparsity     %.4f overall, %.4f of the projection weights\n",
                s.num_parameters ? double(s.zeros) / s.num_parameters : 0.0,
                s.linear_parameters ? double(s.linear_zeros) / s.linear_parameters : 0.0);
  o << line << "\n";
  std::snprintf(line, sizeof line, "%-48s %-6s %-14s %9s %6s\n", "tensor", "dtype", "shape",
                "zeros", "N:M");
  o << line;
  for (const auto& t : s.tensors) {
    std::snprintf(line, sizeof line, "%-48s %-6s %-14s %9.4f %6s\n", t.name.c_str(),
                  t.dtype.c_str(), shape_str(t.shape).c_str(), t.sparsity(),
                  t.nm.empty() ? "-" : t.nm.c_str());
    o << line;
  }
  return o.str();
}

ZeroCount projection_zeros(Llama& model, const std::vector<Proj>& projections) {
  torch::NoGradGuard no_grad;
  ZeroCount n;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (Proj p : projections) {
      const auto& w = model->projection(l, p)->weight;
      n.zeros += w.eq(0).sum().item<int64_t>();
      n.total += w.numel();
    }
  return n;
}

int64_t largest_projection_bytes(Llama& model) {
  int64_t largest = 0;
  for (int64_t l = model->first_layer(); l < model->end_layer(); ++l)
    for (Proj p : kAllProjections)
      largest = std::max<int64_t>(largest, model->projection(l, p)->weight.nbytes());
  return largest;
}

}  // namespace spartan::model
