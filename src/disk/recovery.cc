// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The crash-recovery rule of open (recovery.h).
#include <llbitmap/detail/check.h>
#include <llbitmap/recovery.h>

namespace llbitmap {

RecoveryReport recover_chunk_states(const Superblock& sb, std::span<std::byte> image,
                                    std::span<const std::byte> table, bool out_of_date) {
  const Geometry& g = sb.geometry;
  LLBM_CHECK(g.valid(), "recover_chunk_states: superblock with an empty geometry");
  LLBM_CHECK(image.size() == g.image_bytes(),
             "recover_chunk_states: image of %zu bytes, the geometry has %llu", image.size(),
             static_cast<unsigned long long>(g.image_bytes()));
  LLBM_CHECK(table.size() == g.checksum_table_bytes(),
             "recover_chunk_states: checksum table of %zu bytes, the geometry has %llu",
             table.size(), static_cast<unsigned long long>(g.checksum_table_bytes()));

  RecoveryReport r;
  r.action = recovers_as_stale(sb.state) ? Action::kStale : Action::kReload;
  // Rule 0: never initialised; Init gives Unwritten, or Clean under kSbClean.
  if ((sb.state & kSbFirstUse) != 0) {
    r.first_use = true;
    const ChunkState init =
        (sb.state & kSbClean) != 0 ? ChunkState::kClean : ChunkState::kUnwritten;
    for (std::uint64_t c = 0; c < g.chunks(); ++c)
      image[g.chunk_pos(c)] = static_cast<std::byte>(to_byte(init));
    return r;
  }
  r.bad_blocks = unverifiable_blocks(g, sb.uuid, image, table);

  // Rule 3 (and the invalid-byte count) for every chunk; rule 2 overrides it below.
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    std::byte& byte = image[g.chunk_pos(c)];
    const auto raw = std::to_integer<std::uint8_t>(byte);
    const Transition t = apply_action(raw, r.action);
    if (t.invalid) {
      if (r.invalid_bytes == 0) {
        r.first_invalid_chunk = c;
        r.first_invalid_byte = raw;
      }
      ++r.invalid_bytes;
    }
    if (t.changed()) byte = static_cast<std::byte>(to_byte(t.next));
  }
  // Rule 2: a block that fails its checksum is not trusted at all.
  for (const std::uint64_t b : r.bad_blocks) {
    const ChunkRange chunks = g.chunks_in_block(b);
    r.bad_block_chunks += chunks.size();
    for (std::uint64_t c = chunks.first; c < chunks.end; ++c)
      image[g.chunk_pos(c)] = static_cast<std::byte>(to_byte(ChunkState::kNeedSync));
  }
  // Rule 4: nothing an out-of-date file says can be trusted, not even Unwritten.
  if (out_of_date) {
    r.out_of_date = true;
    for (std::uint64_t c = 0; c < g.chunks(); ++c)
      image[g.chunk_pos(c)] = static_cast<std::byte>(to_byte(ChunkState::kNeedSync));
  }
  return r;
}

}  // namespace llbitmap
