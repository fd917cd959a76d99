#include "trainer/run_log.h"

#include <cstdio>
#include <map>

#include "common/error.h"

namespace spartan::trainer {
namespace {

// metrics.jsonl keeps the records up to `step`; a record torn by a kill (not valid JSON) is
// dropped too. Written beside the file and renamed over it.
void keep_metrics_until(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::trunc);
  std::string line;
  while (std::getline(in, line)) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) continue;
    if (record.contains("step") && record["step"].is_number() &&
        record["step"].get<int64_t>() > step)
      continue;
    out << line << "\n";
  }
  out.close();
  if (!out || std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error("cannot rewrite metrics.jsonl", path, "check that the run folder is writable");
}

}  // namespace

std::vector<std::pair<std::string, float>> tensorboard_scalars(const nlohmann::json& record) {
  static const std::map<std::string, std::string> tags = {
      {"loss", "train/loss"},
      {"lr", "train/lr"},
      {"gate_lr", "train/gate_lr"},
      {"grad_norm", "train/grad_norm"},
      {"skipped_steps", "train/skipped_steps"},
      {"tokens", "train/tokens"},
      {"tokens_per_s", "perf/tokens_per_s"},
      {"comm_share", "perf/comm_share"},
      {"memory_gib", "perf/memory_gib"},
      {"eval_loss", "eval/loss"},
      {"eval_ppl", "eval/perplexity"},
      {"gate_nonzero", "sora/gate_nonzero"},
      {"xi", "sora/xi"},
      {"spp_zeros_lost", "spp/zeros_lost"},
  };
  std::vector<std::pair<std::string, float>> out;
  const std::string event = record.value("event", "");
  for (const auto& [key, value] : record.items()) {
    if (key == "step" || !value.is_number()) continue;
    std::string tag;
    if (!event.empty()) {
      tag = event + "/" + key;
    } else {
      const auto it = tags.find(key);
      tag = it != tags.end() ? it->second : "other/" + key;
    }
    out.emplace_back(tag, value.get<float>());
  }
  return out;
}

std::vector<XiPoint> read_xi_points(const std::string& metrics_path) {
  std::map<int64_t, XiPoint> by_step;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("event", "") != "xi_phase") continue;
    try {
      by_step[j.at("step").get<int64_t>()] = {
          j.at("xi").get<double>(), j.at("gate_nonzero").get<int64_t>(),
          j.at("train_loss").get<double>(), j.at("eval_loss").get<double>()};
    } catch (const nlohmann::json::exception&) {  // a record edited by hand: not a point
    }
  }
  std::vector<XiPoint> points;
  for (const auto& [step, p] : by_step) points.push_back(p);
  return points;
}

RunLog::RunLog(const std::string& run_dir, int64_t keep_until, bool tensorboard)
    : metrics_path_(run_dir + "/metrics.jsonl") {
  keep_metrics_until(metrics_path_, keep_until);
  metrics_.open(metrics_path_, std::ios::app);
  if (!metrics_)
    throw Error("cannot write metrics.jsonl", run_dir, "check that the run folder is writable");
  if (tensorboard) events_ = std::make_unique<EventLog>(run_dir + "/tb", keep_until);
}

void RunLog::write(const nlohmann::json& record) {
  metrics_ << record.dump() << "\n";
  metrics_.flush();
  if (!metrics_)
    throw Error("cannot write metrics.jsonl", metrics_path_, "check that the disk is not full");
  const auto scalars = tensorboard_scalars(record);
  if (events_ && !scalars.empty()) events_->write(record.at("step").get<int64_t>(), scalars);
}

std::string format_duration(double s, int decimals) {
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(s) % 60);
  else
    std::snprintf(buf, sizeof buf, "%.*fs", decimals, s);
  return buf;
}

}  // namespace spartan::trainer
