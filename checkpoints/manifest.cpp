#include "checkpoints/manifest.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/hash.h"

namespace spartan::checkpoints {
namespace {

using nlohmann::json;

constexpr const char* kChecksumPrefix = "fnv1a64:";
constexpr int64_t kMaxRanks = 1 << 20;
constexpr int64_t kMaxElements = int64_t(1) << 40;  // 4 TiB of fp32 in one tensor
constexpr size_t kMaxDims = 8;

// Every refusal names the file and the field; the fix is always the same.
[[noreturn]] void bad(const std::string& path, const std::string& field, const std::string& what) {
  throw Error("manifest field '" + field + "' " + what, path,
              "the checkpoint was edited or is damaged: restore it, or resume from another "
              "checkpoint (checkpoints/step-*)");
}

const json& field(const json& object, const char* key, const std::string& name,
                  const std::string& path) {
  auto it = object.find(key);
  if (it == object.end()) bad(path, name, "is missing");
  return *it;
}

// An integer in [lo, hi]; JSON numbers with a fraction, strings and booleans are refused.
int64_t integer(const json& v, const std::string& name, const std::string& path, int64_t lo,
                int64_t hi) {
  if (!v.is_number_integer()) bad(path, name, "must be an integer, not " + v.dump());
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad(path, name, "is out of range (" + v.dump() + ")");
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    bad(path, name,
        "is " + std::to_string(x) + ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) +
            "]");
  return x;
}

int64_t integer_field(const json& object, const char* key, const std::string& prefix,
                      const std::string& path, int64_t lo, int64_t hi) {
  const std::string name = prefix + key;
  return integer(field(object, key, name, path), name, path, lo, hi);
}

const json& object_field(const json& object, const char* key, const std::string& path) {
  const json& v = field(object, key, key, path);
  if (!v.is_object()) bad(path, key, "must be an object");
  return v;
}

// "shard-ppAA-tpBB.h5" -> (AA, BB); false for anything else (also a path with '/' or "..").
bool parse_shard_file(const std::string& s, int64_t* pp, int64_t* tp) {
  auto digits = [&s](size_t& i, int64_t* out) {
    const size_t start = i;
    int64_t x = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 8) x = x * 10 + (s[i++] - '0');
    *out = x;
    return i - start >= 2;
  };
  size_t i = 0;
  auto literal = [&s, &i](const char* text) {
    const std::string t = text;
    if (s.compare(i, t.size(), t) != 0) return false;
    i += t.size();
    return true;
  };
  return literal("shard-pp") && digits(i, pp) && literal("-tp") && digits(i, tp) &&
         literal(".h5") && i == s.size();
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// `digits` lowercase hexadecimal digits ("crc32c": eight).
bool is_hex(const json& v, int64_t digits) {
  if (!v.is_string() || static_cast<int64_t>(v.get_ref<const std::string&>().size()) != digits)
    return false;
  for (char ch : v.get<std::string>())
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  return true;
}

void check_tensor(const std::string& key, const json& t, int64_t tp, int64_t pp, int64_t version,
                  const std::string& path) {
  const std::string at = "tensors." + key;
  if (!t.is_object()) bad(path, at, "must be an object");
  const json& dtype = field(t, "dtype", at + ".dtype", path);
  // Zero-pattern digests and RNG states are integers; parameters and moments float32.
  const char* expected =
      starts_with(key, "masks/") || starts_with(key, "rng/") ? "int64" : "float32";
  if (dtype != expected)
    bad(path, at + ".dtype", "is " + dtype.dump() + ", not \"" + expected + "\"");

  const json& shape = field(t, "global_shape", at + ".global_shape", path);
  if (!shape.is_array() || shape.size() > kMaxDims)
    bad(path, at + ".global_shape", "must be an array of at most 8 sizes");
  std::vector<int64_t> dims;
  int64_t elements = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    const int64_t n =
        integer(shape[d], at + ".global_shape[" + std::to_string(d) + "]", path, 0, kMaxElements);
    if (n != 0 && elements > kMaxElements / n)
      bad(path, at + ".global_shape", "holds more than 2^40 elements");
    elements *= n;
    dims.push_back(n);
  }

  const json& shards = field(t, "shards", at + ".shards", path);
  if (!shards.is_array() || shards.empty()) bad(path, at + ".shards", "must be a non-empty array");
  std::vector<std::pair<int64_t, int64_t>> slices;
  std::set<int64_t> stages, tp_ranks;
  int64_t split = -2;  // the dimension the shards split; -1 = replicated
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string s_at = at + ".shards[" + std::to_string(i) + "]";
    const json& s = shards[i];
    if (!s.is_object()) bad(path, s_at, "must be an object");
    const json& file = field(s, "file", s_at + ".file", path);
    int64_t file_pp = 0, file_tp = 0;
    if (!file.is_string() || !parse_shard_file(file.get<std::string>(), &file_pp, &file_tp))
      bad(path, s_at + ".file",
          "is " + file.dump() + ", not a shard file name (shard-ppNN-tpNN.h5)");
    if (file_pp >= pp || file_tp >= tp)
      bad(path, s_at + ".file",
          "names a cell outside the topology (pp " + std::to_string(pp) + " x tp " +
              std::to_string(tp) + ")");
    const int64_t dim =
        integer_field(s, "dim", s_at + ".", path, -1, static_cast<int64_t>(dims.size()) - 1);
    if (split != -2 && dim != split) bad(path, s_at + ".dim", "differs from the other shards'");
    split = dim;
    stages.insert(file_pp);
    tp_ranks.insert(file_tp);
    int64_t begin = 0, end = 0;
    if (dim >= 0) {
      begin = integer_field(s, "begin", s_at + ".", path, 0, dims[dim]);
      end = integer_field(s, "end", s_at + ".", path, begin, dims[dim]);
      slices.emplace_back(begin, end);
    }
    // Format 3: each shard's CRC-32C, and where a small tensor lies in its file's pack. Format
    // 4: a tensor of its own dataset has one CRC-32C per block of its bytes instead.
    if (s.contains("offset")) integer_field(s, "offset", s_at + ".", path, 0, kMaxElements);
    if (s.contains("crc32c_blocks")) {
      if (version < 4)
        bad(path, s_at + ".crc32c_blocks", "is not part of format " + std::to_string(version));
      if (s.contains("crc32c") || s.contains("offset"))
        bad(path, s_at + ".crc32c_blocks", "comes with \"crc32c\" or \"offset\"");
      int64_t bytes = starts_with(key, "masks/") || starts_with(key, "rng/") ? 8 : 4;
      for (size_t d = 0; d < dims.size(); ++d)
        bytes *= static_cast<int64_t>(d) == dim ? end - begin : dims[d];
      const int64_t blocks = (bytes + kCrcBlockBytes - 1) / kCrcBlockBytes;
      const json& crcs = s["crc32c_blocks"];
      if (!is_hex(crcs, 8 * blocks))
        bad(path, s_at + ".crc32c_blocks",
            "must be " + std::to_string(8 * blocks) +
                " lowercase hexadecimal digits (a CRC-32C per MiB)");
    } else if (s.contains("crc32c") || version >= 3) {
      if (!is_hex(field(s, "crc32c", s_at + ".crc32c", path), 8))
        bad(path, s_at + ".crc32c", "must be eight lowercase hexadecimal digits");
    }
  }
  // A tensor lives on one stage: TP rank 0 writes a replicated one, every TP rank its slice.
  if (stages.size() != 1) bad(path, at + ".shards", "lie in more than one pipeline stage");
  if (split < 0) {
    if (shards.size() != 1 || *tp_ranks.begin() != 0)
      bad(path, at + ".shards", "must be one shard of TP rank 0 (a replicated tensor)");
    return;
  }
  if (static_cast<int64_t>(shards.size()) != tp || static_cast<int64_t>(tp_ranks.size()) != tp)
    bad(path, at + ".shards",
        "hold " + std::to_string(shards.size()) +
            " slices, one from each of "
            "the " +
            std::to_string(tp) + " TP ranks expected");
  // The slices of a sharded tensor tile its dimension: no gap, no overlap.
  std::sort(slices.begin(), slices.end());
  int64_t next = 0;
  for (const auto& [b, e] : slices) {
    if (b != next)
      bad(path, at + ".shards",
          "do not tile dimension " + std::to_string(split) + " (a gap or an overlap at " +
              std::to_string(b) + ")");
    next = e;
  }
  if (next != dims[split])
    bad(path, at + ".shards",
        "cover " + std::to_string(next) + " of the " + std::to_string(dims[split]) +
            " entries of dimension " + std::to_string(split));
}

}  // namespace

std::string manifest_checksum(const json& manifest) {
  json copy = manifest;
  if (copy.is_object()) copy.erase("checksum");
  const std::string text = copy.dump();  // keys sorted (std::map), no spaces: canonical
  return kChecksumPrefix + hex64(fnv1a(kFnvOffset, text.data(), text.size()));
}

void check_manifest(const json& m, const std::string& path) {
  if (!m.is_object()) bad(path, "(top level)", "must be a JSON object");
  const int64_t version = integer_field(m, "format_version", "", path, 1, kFormatVersion);
  static const std::set<std::string> known = {"format_version", "step",    "topology", "identity",
                                              "state",          "tensors", "checksum"};
  for (auto it = m.begin(); it != m.end(); ++it)
    if (!known.count(it.key())) bad(path, it.key(), "is not part of a spartan manifest");

  // The checksum first: it explains any other difference in one message.
  if (version >= 2) {
    const json& sum = field(m, "checksum", "checksum", path);
    if (!sum.is_string() || sum.get<std::string>() != manifest_checksum(m))
      throw Error("manifest.json does not match its checksum: it was edited or is damaged", path,
                  "restore the file, or resume from another checkpoint (checkpoints/step-*)");
  }

  const int64_t step = integer_field(m, "step", "", path, 0, std::numeric_limits<int64_t>::max());
  const json& topo = object_field(m, "topology", path);
  const int64_t tp = integer_field(topo, "tp", "topology.", path, 1, kMaxRanks);
  const int64_t pp = integer_field(topo, "pp", "topology.", path, 1, kMaxRanks);
  integer_field(topo, "dp", "topology.", path, 1, kMaxRanks);
  object_field(m, "identity", path);

  const json& st = object_field(m, "state", path);
  const int64_t big = std::numeric_limits<int64_t>::max();
  if (integer_field(st, "step", "state.", path, 0, big) != step)
    bad(path, "state.step", "differs from the manifest's step " + std::to_string(step));
  integer_field(st, "tokens", "state.", path, 0, big);
  integer_field(st, "sampler_epoch", "state.", path, 0, big);
  integer_field(st, "sampler_step", "state.", path, 0, big);
  integer_field(st, "adam_steps", "state.", path, 0, step);
  for (const char* optional : {"gate_adam_steps", "skipped_steps"})
    if (st.contains(optional)) integer_field(st, optional, "state.", path, 0, step);
  if (st.contains("loss")) {
    const json& loss = st["loss"];
    if (!loss.is_number() && !loss.is_null() && loss != "nan" && loss != "inf" && loss != "-inf")
      bad(path, "state.loss", "must be a number, \"nan\", \"inf\" or \"-inf\", not " + loss.dump());
  }

  const json& tensors = object_field(m, "tensors", path);
  if (tensors.empty()) bad(path, "tensors", "is empty");
  std::set<std::string> keys;
  for (auto it = tensors.begin(); it != tensors.end(); ++it) {
    const std::string& key = it.key();
    if (!starts_with(key, "params/") && !starts_with(key, "optim/") &&
        !starts_with(key, "masks/") && !starts_with(key, "rng/pp"))
      bad(path, "tensors." + key, "is not a params/, optim/, masks/ or rng/ entry");
    check_tensor(key, it.value(), tp, pp, version, path);
    keys.insert(key);
  }
  // Every trained tensor comes with both AdamW moments of its shape, and the other way round.
  for (const auto& key : keys) {
    if (starts_with(key, "params/")) {
      const std::string name = key.substr(7);
      for (const char* moment : {"/exp_avg", "/exp_avg_sq"}) {
        const std::string o = "optim/" + name + moment;
        if (!keys.count(o))
          bad(path, "tensors." + o, "is missing (the optimizer state of " + key + ")");
        if (tensors[o]["global_shape"] != tensors[key]["global_shape"])
          bad(path, "tensors." + o + ".global_shape", "differs from that of " + key);
      }
    } else if (starts_with(key, "optim/")) {
      const size_t slash = key.rfind('/');
      const std::string moment = key.substr(slash);
      if (slash <= 6 || (moment != "/exp_avg" && moment != "/exp_avg_sq"))
        bad(path, "tensors." + key, "is not an AdamW moment (optim/<name>/exp_avg[_sq])");
      if (!keys.count("params/" + key.substr(6, slash - 6)))
        bad(path, "tensors." + key, "has no params/ entry");
    }
  }
  if (keys.empty() || !std::any_of(keys.begin(), keys.end(),
                                   [](const std::string& k) { return starts_with(k, "params/"); }))
    bad(path, "tensors", "holds no trained tensor (params/...)");
  for (int64_t stage = 0; stage < pp; ++stage)
    if (!keys.count("rng/pp" + std::to_string(stage)))
      bad(path, "tensors.rng/pp" + std::to_string(stage),
          "is missing (stage " + std::to_string(stage) + "'s RNG state)");
}

json read_manifest(const std::string& folder) {
  const std::string path = folder + "/manifest.json";
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("the checkpoint has no manifest.json", folder,
                "resume from a complete checkpoint (see checkpoints/latest)");
  json m;
  try {
    m = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(std::string("manifest.json is not valid JSON (") + e.what() + ")", path,
                "the checkpoint is damaged: resume from another one");
  }
  check_manifest(m, path);
  return m;
}

json loss_to_json(double loss) {
  if (std::isnan(loss)) return "nan";
  if (std::isinf(loss)) return loss > 0 ? "inf" : "-inf";
  return loss;
}

double manifest_loss(const json& state) {
  const auto it = state.find("loss");
  if (it == state.end()) return 0.0;
  if (it->is_number()) return it->get<double>();
  if (*it == "inf") return std::numeric_limits<double>::infinity();
  if (*it == "-inf") return -std::numeric_limits<double>::infinity();
  return std::nan("");  // "nan", or format 1's null
}

}  // namespace spartan::checkpoints
