#include "model/parallelize.h"

#include <string>

#include "common/error.h"
#include "model/llama.h"

namespace spartan::model {
namespace {

// This rank's part [r·n/size, (r+1)·n/size) of n units of `unit` elements each.
TpSlice even_slice(TpSplit split, int64_t n, int64_t unit, int64_t r, int64_t size) {
  const int64_t per = n / size;
  return {split, r * per * unit, (r + 1) * per * unit, n * unit, 1};
}

void check_divides(const LlamaArch& a, int64_t tp) {
  if (a.vocab_size % tp != 0 || a.num_heads % tp != 0 || a.intermediate_size % tp != 0 ||
      (a.num_kv_heads % tp != 0 && tp % a.num_kv_heads != 0))
    throw UsageError("tensor-parallel size " + std::to_string(tp) +
                         " does not divide the vocabulary, the heads, the KV heads or the "
                         "intermediate size",
                     "[parallel] tp", "choose a TP size that divides them");
}

}  // namespace

void parallelize(LlamaImpl& model, parallel::Communicator& tp) {
  const LlamaArch& a = model.arch();
  const int64_t size = tp.size(), r = tp.rank(), hd = a.head_dim();
  check_divides(a, size);
  model.shard_vocabulary(tp);

  const TpSlice q = even_slice(TpSplit::output, a.num_heads, hd, r, size);
  const TpSlice o = even_slice(TpSplit::input, a.num_heads, hd, r, size);
  TpSlice kv = even_slice(TpSplit::output, a.num_kv_heads, hd, r, size);
  if (a.num_kv_heads % size != 0) {  // more ranks than KV heads
    const int64_t holders = size / a.num_kv_heads, head = r / holders;
    kv = {TpSplit::output, head * hd, (head + 1) * hd, a.num_kv_heads * hd, holders};
  }
  const TpSlice column = even_slice(TpSplit::output, a.intermediate_size, 1, r, size);
  const TpSlice row = even_slice(TpSplit::input, a.intermediate_size, 1, r, size);

  for (int64_t l = model.first_layer(); l < model.end_layer(); ++l) {
    auto& attention = model.layer(l)->self_attn;
    attention->q_proj->shard(q, tp);
    attention->k_proj->shard(kv, tp);
    attention->v_proj->shard(kv, tp);
    attention->o_proj->shard(o, tp);
    attention->num_heads = a.num_heads / size;
    attention->num_kv_heads = kv.size() / hd;
    attention->tp = &tp;
    auto& mlp = model.layer(l)->mlp;
    mlp->gate_proj->shard(column, tp);
    mlp->up_proj->shard(column, tp);
    mlp->down_proj->shard(row, tp);
    mlp->tp = &tp;
  }
}

}  // namespace spartan::model
