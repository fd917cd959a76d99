#include "common/crc32c.h"

#include <array>
#include <cstring>

namespace spartan {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

const std::array<uint32_t, 256>& table() {
  static const std::array<uint32_t, 256> t = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return t;
}

// The register update without the pre- and post-inversion, one byte at a time.
uint32_t update_bytes(uint32_t c, const unsigned char* p, size_t n) {
  const auto& t = table();
  while (n--) c = t[(c ^ *p++) & 0xFF] ^ (c >> 8);
  return c;
}

// a·b modulo the polynomial, in the reflected representation (bit 31 is x^0).
uint32_t mul_mod(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;  // b·x
  }
  return product;
}

// x^(8·n) modulo the polynomial: what appending n zero bytes multiplies a register by.
uint32_t x_pow_8n(uint64_t n) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t square = 1u << 23;  // x^8
  for (; n != 0; n >>= 1) {
    if (n & 1) result = mul_mod(result, square);
    square = mul_mod(square, square);
  }
  return result;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t update_hw(uint32_t c32, const unsigned char* p,
                                                     size_t n) {
  uint64_t c = c32;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
  }
  c32 = static_cast<uint32_t>(c);
  for (; n > 0; --n) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}

// Three streams over three equal thirds at once (the instruction's latency is three cycles,
// its throughput one per cycle), combined at the end.
__attribute__((target("sse4.2"))) uint32_t crc_hw(const unsigned char* p, size_t n, uint32_t crc) {
  constexpr size_t kMinInterleaved = 3 * 4096;
  if (n < kMinInterleaved) return ~update_hw(~crc, p, n);
  const size_t third = n / 3 / 8 * 8;
  uint64_t a = ~crc, b = ~0u, c = ~0u;
  const unsigned char *pb = p + third, *pc = p + 2 * third;
  for (size_t i = 0; i < third; i += 8) {
    uint64_t va, vb, vc;
    std::memcpy(&va, p + i, 8);
    std::memcpy(&vb, pb + i, 8);
    std::memcpy(&vc, pc + i, 8);
    a = __builtin_ia32_crc32di(a, va);
    b = __builtin_ia32_crc32di(b, vb);
    c = __builtin_ia32_crc32di(c, vc);
  }
  const size_t rest = n - 3 * third;
  const uint32_t tail = ~update_hw(static_cast<uint32_t>(c), pc + third, rest);
  uint32_t out = crc32c_combine(~static_cast<uint32_t>(a), ~static_cast<uint32_t>(b), third);
  return crc32c_combine(out, tail, third + rest);
}
#endif

}  // namespace

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t size_b) {
  return mul_mod(x_pow_8n(size_b), crc_a) ^ crc_b;
}

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const unsigned char*>(data);
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) return crc_hw(p, size, crc);
#endif
  return ~update_bytes(~crc, p, size);
}

}  // namespace spartan
