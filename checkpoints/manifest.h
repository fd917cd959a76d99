// The checkpoint manifest (DESIGN.md §5): its schema, its checksum and its validation. No torch,
// no HDF5, so that the reader can be fuzzed on its own (fuzz/manifest.cpp).
//
// Format 4 (since 2026-12-01) checks a tensor of its own dataset (1 MiB or more) by the CRC-32C
// of each MiB of its bytes ("crc32c_blocks": eight hex digits a block, the last block shorter),
// so that a rank reading part of it (another TP layout) reads and checks only the blocks it
// needs; a packed tensor keeps one "crc32c".
// Format 3 (written since 2026-11-30) adds to each shard entry its CRC-32C ("crc32c", eight hex
// digits) and, for a tensor packed with the other small ones of its file, its element "offset"
// (checkpoint.h). Format 2 carries "checksum": "fnv1a64:<16 hex digits>", the digest of the
// manifest's canonical JSON (sorted keys, no spaces) without the checksum field. Format 1 has no
// checksum. Both are still read, with every field validated. A manifest edited by hand, or
// damaged, is refused before a tensor is read: a lowered step would re-train over newer
// checkpoints, a changed topology would skip the RNG state, a changed dtype would read garbage.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace spartan::checkpoints {

constexpr int kFormatVersion = 4;
// The bytes each CRC-32C of "crc32c_blocks" covers (format 4).
constexpr int64_t kCrcBlockBytes = int64_t(1) << 20;

// The checksum field's value for `manifest` (its own checksum field ignored).
std::string manifest_checksum(const nlohmann::json& manifest);

// Validates every field's presence, type and range, the consistency between them (state.step
// equals step; every trained tensor has both AdamW moments; the slices of a sharded tensor tile
// its dimension; shard files name cells inside the topology; one RNG state per stage) and the
// checksum. Throws spartan::Error naming `path` and the field.
void check_manifest(const nlohmann::json& manifest, const std::string& path);

// Reads and checks <folder>/manifest.json.
nlohmann::json read_manifest(const std::string& folder);

// A loss for the manifest's state: the number, or "nan", "inf", "-inf" (JSON has no
// non-finite numbers). `manifest_loss` reads it back; format 1's null reads as NaN.
nlohmann::json loss_to_json(double loss);
double manifest_loss(const nlohmann::json& state);

}  // namespace spartan::checkpoints
