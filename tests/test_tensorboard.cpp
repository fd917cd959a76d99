// TensorBoard event files: the record framing's checksums, the encoding read back, a torn tail
// and a resume that logs each step once. tests/cli/tensorboard.sh reads a run's files with the
// tensorboard package itself.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "common/crc32c.h"
#include "trainer/run_log.h"
#include "trainer/tensorboard.h"

using namespace spartan;
using namespace spartan::trainer;

namespace {

std::string scratch(const std::string& name) {
  const std::string d = testing::TempDir() + "spartan_tb_" + name;
  std::system(("rm -rf " + d + " && mkdir -p " + d).c_str());
  return d;
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<int64_t> steps(const std::string& path) {
  std::vector<int64_t> out;
  for (const auto& e : decode_records(read(path)))
    if (e.file_version.empty()) out.push_back(e.step);
  return out;
}

}  // namespace

// The check values of CRC-32C (RFC 3720, B.4) and of TFRecord's mask.
TEST(TensorBoard, Crc32cMatchesItsCheckValues) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  const uint32_t c = 0xE3069283u;
  EXPECT_EQ(masked_crc32c("123456789", 9), ((c >> 15) | (c << 17)) + 0xA282EAD8u);
}

// The interleaved hardware form (long buffers) and the continued form equal the plain byte-wise
// definition at every length around the interleaving's edges, and combining two CRCs equals the
// CRC of the two buffers in a row.
TEST(Crc32c, EveryPathEqualsTheBytewiseDefinition) {
  auto bytewise = [](const std::string& s) {
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : s)
      for (int k = 0; k < 8; ++k) c = ((c ^ (b >> k)) & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    return ~c;
  };
  std::mt19937 gen(5);
  std::string data(3 * 4096 * 3 + 77, '\0');
  for (auto& ch : data) ch = static_cast<char>(gen());
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(3 * 4096 - 1), size_t(3 * 4096),
                   size_t(3 * 4096 + 5), size_t(5 * 4096 + 3), data.size()}) {
    const std::string s = data.substr(0, n);
    EXPECT_EQ(crc32c(s.data(), s.size()), bytewise(s)) << n;
    for (size_t cut : {size_t(0), n / 3, n}) {
      const uint32_t a = crc32c(s.data(), cut), b = crc32c(s.data() + cut, n - cut);
      EXPECT_EQ(crc32c(s.data() + cut, n - cut, a), bytewise(s)) << n << " cut " << cut;
      EXPECT_EQ(crc32c_combine(a, b, n - cut), bytewise(s)) << n << " cut " << cut;
    }
  }
}

TEST(TensorBoard, RecordsDecodeToWhatWasEncoded) {
  TbEvent a;
  a.wall_time = 1764470000.25;
  a.file_version = "brain.Event:2";
  TbEvent b;
  b.wall_time = 1764470001.5;
  b.step = 1234567890123;
  b.scalars = {{"train/loss", 5.25f}, {"eval/perplexity", 190.5f}, {"", -0.0f}};
  size_t good = 0;
  const std::string bytes = encode_record(a) + encode_record(b);
  const auto events = decode_records(bytes, &good);
  EXPECT_EQ(good, bytes.size());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_EQ(events[0].wall_time, a.wall_time);
  EXPECT_EQ(events[1].step, b.step);
  EXPECT_EQ(events[1].scalars, b.scalars);
}

// A record cut anywhere (a kill during the write) or with a flipped bit ends the stream there.
TEST(TensorBoard, ATornOrDamagedRecordEndsTheStream) {
  TbEvent e;
  e.step = 7;
  e.scalars = {{"train/loss", 1.0f}};
  const std::string one = encode_record(e), two = one + one;
  for (size_t cut = one.size(); cut < two.size(); ++cut) {
    size_t good = 0;
    EXPECT_EQ(decode_records(two.substr(0, cut), &good).size(), 1u) << cut;
    EXPECT_EQ(good, one.size());
  }
  for (size_t at = 0; at < one.size(); ++at) {
    std::string bad = two;
    bad[one.size() + at] ^= 0x10;
    EXPECT_EQ(decode_records(bad).size(), 1u) << at;
  }
}

// Random bytes never crash the reader (the files are read back on every resume).
TEST(TensorBoard, RandomBytesAreRejectedSafely) {
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (auto& ch : junk) ch = static_cast<char>(rng());
    decode_records(junk);
    // A valid frame around a random payload: the protobuf decoder sees the junk.
    const uint64_t n = junk.size();
    std::string framed(reinterpret_cast<const char*>(&n), 8);
    const uint32_t lc = masked_crc32c(&n, 8), dc = masked_crc32c(junk.data(), junk.size());
    framed.append(reinterpret_cast<const char*>(&lc), 4);
    framed += junk;
    framed.append(reinterpret_cast<const char*>(&dc), 4);
    decode_records(framed);
  }
}

// A resumed run keeps what was logged up to its checkpoint, drops the later steps and a torn
// tail, and appends to the same file; a new run (keep_until 0) starts the file over.
TEST(TensorBoard, AResumeLogsEachStepOnce) {
  const std::string dir = scratch("resume");
  std::string path;
  {
    EventLog log(dir, 0);
    path = log.path();
    for (int64_t s = 1; s <= 6; ++s) log.write(s, {{"train/loss", float(s)}});
  }
  {
    std::ofstream torn(path, std::ios::binary | std::ios::app);
    torn << encode_record(TbEvent{}).substr(0, 9);
  }
  {
    EventLog log(dir, 4);
    EXPECT_EQ(log.path(), path);
    EXPECT_EQ(steps(path), (std::vector<int64_t>{1, 2, 3, 4}));
    for (int64_t s = 5; s <= 8; ++s) log.write(s, {{"train/loss", float(s)}});
  }
  EXPECT_EQ(steps(path), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  const auto events = decode_records(read(path));
  EXPECT_EQ(events.front().file_version, "brain.Event:2");
  { EventLog fresh(dir, 0); }
  EXPECT_TRUE(steps(path).empty());
  EXPECT_EQ(decode_records(read(path)).size(), 1u);  // the header alone
  std::system(("rm -rf " + dir).c_str());
}

TEST(TensorBoard, MetricsRecordsBecomeTaggedScalars) {
  const auto s = tensorboard_scalars(
      {{"step", 10}, {"loss", 2.5}, {"eval_ppl", 12.0}, {"comm_bytes", {{"tp", 4}}}});
  EXPECT_EQ(s, (std::vector<std::pair<std::string, float>>{{"eval/perplexity", 12.0f},
                                                           {"train/loss", 2.5f}}));
  const auto x = tensorboard_scalars({{"step", 3}, {"event", "xi_phase"}, {"xi", 0.5}});
  EXPECT_EQ(x, (std::vector<std::pair<std::string, float>>{{"xi_phase/xi", 0.5f}}));
}

// RunLog keeps metrics.jsonl and the event file in step with each other across a resume.
TEST(TensorBoard, RunLogTrimsBothLogsOnResume) {
  const std::string dir = scratch("runlog");
  {
    RunLog log(dir, 0, true);
    for (int s = 1; s <= 5; ++s) log.write({{"step", s}, {"loss", 1.0 / s}});
  }
  { std::ofstream(dir + "/metrics.jsonl", std::ios::app) << "{\"step\": 6, \"lo"; }
  {
    RunLog log(dir, 3, true);
    log.write({{"step", 4}, {"loss", 0.0}});
  }
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<int64_t> jsonl;
  for (std::string line; std::getline(in, line);)
    jsonl.push_back(nlohmann::json::parse(line)["step"].get<int64_t>());
  EXPECT_EQ(jsonl, (std::vector<int64_t>{1, 2, 3, 4}));
  const auto names = event_files(dir + "/tb");
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(steps(dir + "/tb/" + names.front()), (std::vector<int64_t>{1, 2, 3, 4}));
  std::system(("rm -rf " + dir).c_str());
}
