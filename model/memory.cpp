#include "model/memory.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "common/error.h"

namespace spartan::model {

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (bytes >= 1000 && u < 6) {
    bytes /= 1000;
    ++u;
  }
  char buf[48];
  if (bytes >= 1e6)  // beyond exabytes: say so plainly
    std::snprintf(buf, sizeof buf, "%.2g %s", bytes, units[u]);
  else
    std::snprintf(buf, sizeof buf, bytes < 10 && u > 0 ? "%.2f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

std::string MemoryEstimate::describe() const {
  return format_bytes(total()) + " (base " + format_bytes(base) + ", trainable state " +
         format_bytes(trainable) + ", activations " + format_bytes(activations) + ", logits " +
         format_bytes(logits) + ")";
}

MemoryEstimate estimate_memory(const LlamaArch& a, const MemoryInputs& in) {
  // Doubles throughout: absurd shapes must give a large number, not an overflow.
  const double h = double(a.hidden_size), I = double(a.intermediate_size);
  const double V = double(a.vocab_size), L = double(a.num_layers);
  const double kv = double(a.num_kv_heads) * (h / double(a.num_heads));
  const double tp = double(std::max<int64_t>(1, in.tp)), pp = double(std::max<int64_t>(1, in.pp));
  const double layers = std::ceil(L / pp);  // the largest stage
  const double per_layer = 2 * h * h + 2 * h * kv + 3 * h * I;
  const double embed = V * h;
  MemoryEstimate e;
  // The first stage holds the embedding, the last the head; a single stage both.
  const double ends = pp == 1 ? (a.tie_word_embeddings ? 1 : 2) * embed : embed;
  e.base = double(in.base_dtype_bytes) * (layers * per_layer + ends) / tp;

  // fp32 values, gradients and two moments: 16 bytes a trained entry.
  double trained = 0;
  if (in.full)
    trained = (layers * per_layer + ends) / tp;
  else if (in.adapter_r > 0)  // r x (in + out) on each targeted projection, at most all seven
    trained = layers * double(std::min<int64_t>(in.adapter_targets, 7)) * double(in.adapter_r) *
              (h + std::max(h, I)) / tp;
  e.trainable = 16 * trained;

  if (in.seq_len > 0) {
    const double tokens = double(in.seq_len) * double(std::max<int64_t>(1, in.micro_batch));
    // At least the input of each block, its attention probabilities (heads x seq per token) and
    // the MLP's hidden activations, in fp32; 1F1B keeps up to pp micro-batches on stage 0.
    const double per_token = 2 * h + (double(a.num_heads) * double(in.seq_len) + 2 * I) / tp;
    const double in_flight = std::min(pp, double(std::max<int64_t>(1, in.micro_batches)));
    e.activations = 4 * tokens * layers * per_token * in_flight;
    e.logits = 4 * 2 * tokens * V / tp;  // logits and their gradient, fp32
  }
  return e;
}

double machine_memory_per_rank() {
  double bytes = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
  // cgroup v2 limit, where one is set ("max" means none).
  std::ifstream cg("/sys/fs/cgroup/memory.max");
  std::string text;
  if (cg >> text && text != "max") {
    char* end = nullptr;
    const double limit = std::strtod(text.c_str(), &end);
    if (end && *end == '\0' && limit > 0) bytes = std::min(bytes, limit);
  }
  int local = 1;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* v = std::getenv(var)) {
      local = std::max(1, std::atoi(v));
      break;
    }
  return bytes / local;
}

void check_memory(const MemoryEstimate& need, double limit_bytes, const std::string& where) {
  if (need.total() <= limit_bytes) return;
  throw UsageError("the run needs at least " + need.describe() + " of memory on one rank, " +
                       format_bytes(limit_bytes) + " is available",
                   where,
                   "check the model's sizes, shorten data.seq_len or the micro-batch, split the "
                   "model over more ranks (parallel.tp, parallel.pp), or set run.memory_limit_gb");
}

}  // namespace spartan::model
