// SPDX-License-Identifier: LGPL-2.1-or-later
//
// image_states.h: the chunk states a bitmap file image holds, as stored (no Reload), for
// tests that decode many images: the same answer as test::stored_states
// (bitmap_fixture.h), but every block's checksum is verified once, not once per chunk.
#pragma once

#include <llbitmap/format.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <system_error>
#include <vector>

namespace llbitmap::test {

// nullopt for a chunk whose block fails its checksum; empty if the superblock does not
// decode (or the file size does not match it).
inline std::vector<std::optional<std::uint8_t>> image_states(const std::vector<std::byte>& file) {
  std::error_code ec;
  const auto sb = Superblock::decode(file, ec, file.size());
  if (!sb) return {};
  const Geometry& g = sb->geometry;
  const std::span<const std::byte> image(file.data(), g.image_bytes());
  const std::span<const std::byte> table(file.data() + g.checksum_table_offset(),
                                         g.checksum_table_bytes());
  std::vector<std::optional<std::uint8_t>> out(g.chunks());
  for (std::uint64_t b = 0; b < g.blocks(); ++b) {
    const ChunkRange r = g.chunks_in_block(b);
    if (r.empty() || !verify_block(g, sb->uuid, image, table, b)) continue;
    for (std::uint64_t c = r.first; c < r.end; ++c)
      out[c] = std::to_integer<std::uint8_t>(image[g.chunk_pos(c)]);
  }
  return out;
}

// True if the image's superblock decodes and says stale or write error (the next open
// resyncs every written chunk).
inline bool image_is_stale(const std::vector<std::byte>& file) {
  std::error_code ec;
  const auto sb = Superblock::decode(file, ec, file.size());
  return sb && (sb->state & (kSbStale | kSbWriteError)) != 0;
}

}  // namespace llbitmap::test
