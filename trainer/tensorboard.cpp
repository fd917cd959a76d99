#include "trainer/tensorboard.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/files.h"

namespace spartan::trainer {
namespace {

// Protocol-buffer wire format: keys are (field << 3 | wire type).
enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

template <typename T>
void put_fixed(std::string& out, T v) {  // little-endian hosts only (x86-64, aarch64)
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void put_key(std::string& out, uint32_t field, Wire wire) { put_varint(out, field << 3 | wire); }

void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kBytes);
  put_varint(out, bytes.size());
  out += bytes;
}

// A bounded reader of one message; every read checks the bounds and reports failure.
struct Reader {
  const char* p;
  const char* end;

  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p == end) return false;
      const auto b = static_cast<uint8_t>(*p++);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  template <typename T>
  bool fixed(T& v) {
    if (end - p < static_cast<std::ptrdiff_t>(sizeof(T))) return false;
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    return true;
  }
  bool bytes(std::string& v) {
    uint64_t n = 0;
    if (!varint(n) || n > static_cast<uint64_t>(end - p)) return false;
    v.assign(p, n);
    p += n;
    return true;
  }
  // Skips a field of `wire` type; false for a group or an unknown type.
  bool skip(uint32_t wire) {
    uint64_t u;
    uint32_t u32;
    std::string s;
    switch (wire) {
      case kVarint:
        return varint(u);
      case kFixed64:
        return fixed(u);
      case kBytes:
        return bytes(s);
      case kFixed32:
        return fixed(u32);
      default:
        return false;
    }
  }
};

// Calls field(number, wire, reader) for each field; false if a field does not parse.
template <typename F>
bool for_each_field(const std::string& message, F&& field) {
  Reader r{message.data(), message.data() + message.size()};
  while (r.p != r.end) {
    uint64_t key = 0;
    if (!r.varint(key)) return false;
    if (!field(static_cast<uint32_t>(key >> 3), static_cast<uint32_t>(key & 7), r)) return false;
  }
  return true;
}

bool decode_value(const std::string& message, TbEvent& event) {
  std::string tag;
  float value = 0;
  bool has_value = false;
  const bool ok = for_each_field(message, [&](uint32_t field, uint32_t wire, Reader& r) {
    if (field == 1 && wire == kBytes) return r.bytes(tag);
    if (field == 2 && wire == kFixed32) return has_value = r.fixed(value);
    return r.skip(wire);
  });
  if (ok && has_value) event.scalars.emplace_back(tag, value);  // other kinds are not scalars
  return ok;
}

bool decode_event(const std::string& message, TbEvent& event) {
  return for_each_field(message, [&](uint32_t field, uint32_t wire, Reader& r) {
    std::string s;
    if (field == 1 && wire == kFixed64) return r.fixed(event.wall_time);
    if (field == 2 && wire == kVarint) {
      uint64_t v = 0;
      if (!r.varint(v)) return false;
      event.step = static_cast<int64_t>(v);
      return true;
    }
    if (field == 3 && wire == kBytes) return r.bytes(event.file_version);
    if (field == 5 && wire == kBytes) {  // Summary
      if (!r.bytes(s)) return false;
      return for_each_field(s, [&](uint32_t f, uint32_t w, Reader& sr) {
        std::string value;
        if (f == 1 && w == kBytes) return sr.bytes(value) && decode_value(value, event);
        return sr.skip(w);
      });
    }
    return r.skip(wire);
  });
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

std::string encode_record(const TbEvent& event) {
  std::string msg;
  put_key(msg, 1, kFixed64);
  put_fixed(msg, event.wall_time);
  put_key(msg, 2, kVarint);
  put_varint(msg, static_cast<uint64_t>(event.step));
  if (!event.file_version.empty()) put_bytes(msg, 3, event.file_version);
  if (!event.scalars.empty()) {
    std::string summary;
    for (const auto& [tag, value] : event.scalars) {
      std::string v;
      put_bytes(v, 1, tag);
      put_key(v, 2, kFixed32);
      put_fixed(v, value);
      put_bytes(summary, 1, v);
    }
    put_bytes(msg, 5, summary);
  }
  std::string record;
  const uint64_t length = msg.size();
  put_fixed(record, length);
  put_fixed(record, masked_crc32c(&length, sizeof length));
  record += msg;
  put_fixed(record, masked_crc32c(msg.data(), msg.size()));
  return record;
}

std::vector<TbEvent> decode_records(const std::string& bytes, size_t* good_bytes) {
  std::vector<TbEvent> events;
  size_t at = 0;
  for (;;) {
    if (bytes.size() - at < 12) break;  // length and its checksum
    uint64_t length;
    uint32_t length_crc, data_crc;
    std::memcpy(&length, bytes.data() + at, 8);
    std::memcpy(&length_crc, bytes.data() + at + 8, 4);
    if (length_crc != masked_crc32c(&length, 8) || length > bytes.size() - at - 12 - 4) break;
    const char* data = bytes.data() + at + 12;
    std::memcpy(&data_crc, data + length, 4);
    if (data_crc != masked_crc32c(data, length)) break;
    TbEvent event;
    if (!decode_event(std::string(data, length), event)) break;
    events.push_back(std::move(event));
    at += 12 + length + 4;
  }
  if (good_bytes) *good_bytes = at;
  return events;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("events.out.tfevents.", 0) == 0 && name.find(".tmp") == std::string::npos)
      names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

EventLog::EventLog(const std::string& dir, int64_t keep_until) {
  make_dirs(dir);
  const auto names = event_files(dir);
  if (names.empty()) {
    char host[256] = "localhost";
    ::gethostname(host, sizeof host - 1);
    char name[320];
    std::snprintf(name, sizeof name, "events.out.tfevents.%010lld.%s",
                  static_cast<long long>(now_seconds()), host);
    path_ = dir + "/" + name;
  } else {
    path_ = dir + "/" + names.back();
  }
  // Keep the steps up to keep_until, in every event file of the folder (there is one unless a
  // user copied another in); append to the newest.
  for (const auto& name : names) {
    const std::string path = dir + "/" + name, tmp = path + ".tmp";
    std::string kept;
    for (const auto& event : decode_records(read_all(path)))
      if (event.step <= keep_until) kept += encode_record(event);
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kept;
    out.close();
    if (!out || std::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error("cannot rewrite the TensorBoard event file", path,
                  "check that the run folder is writable");
  }
  const bool fresh = names.empty() || decode_records(read_all(path_)).empty();
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_)
    throw Error("cannot write the TensorBoard event file", path_,
                "check that the run folder is writable");
  if (fresh) {
    TbEvent header;
    header.wall_time = now_seconds();
    header.file_version = "brain.Event:2";
    out_ << encode_record(header);
    out_.flush();
  }
}

void EventLog::write(int64_t step, const std::vector<std::pair<std::string, float>>& scalars) {
  TbEvent event;
  event.wall_time = now_seconds();
  event.step = step;
  event.scalars = scalars;
  out_ << encode_record(event);
  out_.flush();
  if (!out_)
    throw Error("cannot write the TensorBoard event file", path_,
                "check that the disk is not full");
}

}  // namespace spartan::trainer
