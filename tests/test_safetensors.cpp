// Safetensors reader and writer without torch: round trip and malformed files.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/safetensors.h"

using spartan::model::DType;
using spartan::model::SafetensorsFile;
using spartan::model::TensorView;

namespace {

std::string temp_path(const std::string& name) { return testing::TempDir() + "spartan_st_" + name; }

// A file with an 8-byte little-endian length, then `header` (declared length `declared`,
// default its size), then `data_bytes` bytes.
std::string write_raw(const std::string& name, const std::string& header, size_t data_bytes,
                      long long declared = -1) {
  std::string path = temp_path(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t n = declared < 0 ? header.size() : static_cast<uint64_t>(declared);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
  return path;
}

// The error message when opening `path`, "" if it opens.
std::string open_error(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const spartan::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTrip) {
  std::vector<float> a = {1.5f, -2.0f, 0.0f, 3.25f, 4.0f, 5.0f};
  std::vector<int64_t> b = {7, -8, 9};
  std::vector<uint16_t> c = {0x3f80, 0x4000};  // bf16 1.0, 2.0
  std::string path = temp_path("roundtrip.safetensors");
  spartan::model::write_safetensors(
      path,
      {TensorView{"a", DType::F32, {2, 3}, a.data()},
       TensorView{"b.ids", DType::I64, {3}, b.data()}, TensorView{"c", DType::BF16, {2}, c.data()},
       TensorView{"empty", DType::F32, {0, 4}, nullptr}},
      {{"format", "pt"}});
  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const auto& ta = f.at("a");
  EXPECT_EQ(ta.dtype, DType::F32);
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(f.data(ta), a.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.data(f.at("b.ids")), b.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.data(f.at("c")), c.data(), 4), 0);
  EXPECT_EQ(f.at("empty").numel(), 0);
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_THROW(f.at("missing"), spartan::Error);
  // Header padded so the data section starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
}

struct Malformed {
  const char* name;
  std::string header;
  size_t data_bytes;
  long long declared;
  const char* expected;  // part of the error message
};

class SafetensorsMalformed : public testing::TestWithParam<Malformed> {};

TEST_P(SafetensorsMalformed, IsRejectedWithTheFileAndTensorNamed) {
  const Malformed& m = GetParam();
  std::string path =
      write_raw(std::string(m.name) + ".safetensors", m.header, m.data_bytes, m.declared);
  std::string e = open_error(path);
  EXPECT_NE(e.find("invalid safetensors file"), std::string::npos) << e;
  EXPECT_NE(e.find(m.expected), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
}

const std::string kOk = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";

INSTANTIATE_TEST_SUITE_P(
    Files, SafetensorsMalformed,
    testing::Values(
        Malformed{"header_past_end", kOk, 16, 1000, "runs past the end"},
        Malformed{"huge_header", kOk, 16, 1ll << 40, "exceeds the limit"},
        Malformed{"not_json", "{\"w\": [1, 2", 0, -1, "not valid JSON"},
        Malformed{"not_object", "[1, 2, 3]", 0, -1, "not a JSON object"},
        Malformed{"non_utf8", "{\"w\xff\xfe\":{}}", 0, -1, "not valid JSON"},
        Malformed{"unknown_dtype", R"({"w":{"dtype":"F12","shape":[2],"data_offsets":[0,4]}})", 4,
                  -1, "unsupported dtype 'F12'"},
        Malformed{"offsets_out_of_range",
                  R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", 8, -1,
                  "run past the 8-byte data section"},
        Malformed{"shape_bytes_mismatch",
                  R"({"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}})", 16, -1,
                  "need 24 bytes but data_offsets span 16"},
        Malformed{"overlap",
                  R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                  16, -1, "overlaps"},
        Malformed{"begin_after_end", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8,
                  -1, "begin after they end"},
        Malformed{"negative_dim", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4,
                  -1, "non-negative integers"},
        Malformed{"shape_overflow",
                  R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
                  4, -1, "overflows"},
        Malformed{"missing_offsets", R"({"w":{"dtype":"F32","shape":[1]}})", 4, -1,
                  "data_offsets must be two"},
        Malformed{"bad_metadata", R"({"__metadata__":{"k":1}})", 0, -1, "is not a string"}),
    [](const testing::TestParamInfo<Malformed>& p) { return std::string(p.param.name); });

TEST(SafetensorsMalformedFiles, TruncatedLengthAndMissingFile) {
  std::string path = temp_path("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  EXPECT_NE(open_error(path).find("shorter than the 8-byte header length"), std::string::npos);
  EXPECT_NE(open_error(temp_path("does_not_exist")).find("cannot open safetensors file"),
            std::string::npos);
}

TEST(SafetensorsMalformedFiles, ErrorNamesTheTensor) {
  std::string path = write_raw("named.safetensors",
                               R"({"model.layers.0.w":{"dtype":"F32","shape":[3],)"
                               R"("data_offsets":[0,4]}})",
                               4);
  EXPECT_NE(open_error(path).find("tensor 'model.layers.0.w'"), std::string::npos);
}
