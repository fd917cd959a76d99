// TensorBoard event files, written without TensorFlow: the TFRecord framing (length, masked
// CRC-32C of the length, payload, masked CRC-32C of the payload) around `Event` protocol-buffer
// messages that carry a step, a wall time and a `Summary` of scalar values. Only the fields
// TensorBoard's scalar dashboard reads are encoded:
//
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
//
// The messages are five fields, so they are encoded here rather than through a protobuf library
// (libtorch_cpu exports pieces of its own protobuf build; a second one in the process invites
// symbol clashes). tests/cli/tensorboard.sh reads the files back with the tensorboard package.
// Torch-free.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace spartan::trainer {

// TFRecord's masked form of CRC-32C (common/crc32c.h).
uint32_t masked_crc32c(const void* data, size_t size);

struct TbEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;                            // set only in a file's first event
  std::vector<std::pair<std::string, float>> scalars;  // (tag, value)
};

// One TFRecord holding `event`.
std::string encode_record(const TbEvent& event);

// The events of a record stream, in order, up to the first record that is torn (a write cut by
// a kill), fails its checksum or does not parse; `good_bytes`, if given, receives the length of
// the stream's valid prefix. Never throws on malformed input.
std::vector<TbEvent> decode_records(const std::string& bytes, size_t* good_bytes = nullptr);

// The names of the event files in `dir`, sorted (TensorBoard's order: the time comes first).
std::vector<std::string> event_files(const std::string& dir);

// A run's event file under `dir` (created if needed): events.out.tfevents.<time>.<host>.
// Opening it keeps the events of steps <= keep_until and drops the rest, so that a resumed run
// logs each step once (0 for a new run: the folder's older events are dropped); a torn tail is
// dropped too. The file is rewritten beside itself and renamed over, then appended to.
class EventLog {
 public:
  EventLog(const std::string& dir, int64_t keep_until);
  // One event at `step` holding every (tag, value); flushed, so that a live TensorBoard sees it.
  void write(int64_t step, const std::vector<std::pair<std::string, float>>& scalars);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace spartan::trainer
