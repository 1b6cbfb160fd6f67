// SPDX-License-Identifier: LGPL-2.1-or-later
//
// What both drivers do to a ChunkImage in the same way (image_ops.h).
#include "image_ops.h"

namespace llbitmap::image_ops {

namespace {
constexpr bool startwrite_keeps_matches_table() {
  for (unsigned raw = 0; raw < 256; ++raw) {
    for (const TransitionContext ctx : {TransitionContext{}, TransitionContext{.degraded = true},
                                        TransitionContext{.parity = true}}) {
      const bool keeps =
          !apply_action(static_cast<std::uint8_t>(raw), Action::kStartwrite, ctx).changed();
      if (keeps != startwrite_keeps(static_cast<std::uint8_t>(raw))) return false;
    }
  }
  return true;
}
static_assert(startwrite_keeps_matches_table(),
              "startwrite_keeps() must agree with the state table in every context");

// In memory every byte is a state (loading turns the others into NeedSync), and of the
// states the Daemon action changes only Dirty.
constexpr bool daemon_changes_only_dirty() {
  for (std::uint8_t raw = 0; raw < kChunkStateCount; ++raw) {
    const Transition t = apply_action(raw, Action::kDaemon, TransitionContext{});
    const bool changes = t.changed() && to_byte(t.next) != raw;
    if (changes != (raw == to_byte(ChunkState::kDirty))) return false;
  }
  return true;
}
static_assert(daemon_changes_only_dirty(), "clean_page() looks for Dirty bytes only");
}  // namespace

bool durably_covered(const ChunkImage& image, std::uint64_t first, std::uint64_t last) noexcept {
  const Geometry& geo = image.geometry();
  for (std::uint64_t c = first; c <= last; ++c) {
    const std::uint64_t pos = geo.chunk_pos(c);
    if (!startwrite_keeps(image.load_byte(pos)) || !image.durably_covered(pos)) return false;
  }
  return true;
}

void discard_chunks(const Geometry& geo, std::uint64_t offset, std::uint64_t length,
                    std::uint64_t& first, std::uint64_t& last) noexcept {
  // The caller checked that the range is inside the device, so end <= device_bytes fits;
  // offset + chunk_bytes - 1 (the kernel's round-up) would wrap near 2^64.
  const unsigned shift = geo.chunk_shift();
  const std::uint64_t end = offset + length;
  first = (offset >> shift) + ((offset & (geo.chunk_bytes() - 1)) != 0 ? 1 : 0);
  const std::uint64_t stop = (end == geo.device_bytes() ? geo.chunks() : end >> shift);
  if (first >= stop) {
    first = 1;
    last = 0;  // nothing covered
    return;
  }
  last = stop - 1;
}

ChangeTable::ChangeTable(Action action, const TransitionContext& ctx, std::uint64_t chunks) noexcept
    : action_(action), ctx_(ctx), cached_(chunks >= 256) {
  if (!cached_) return;
  for (unsigned raw = 0; raw < 256; ++raw) changes_[raw] = compute(static_cast<std::uint8_t>(raw));
}

bool ChangeTable::compute(std::uint8_t raw) const noexcept {
  const Transition t = apply_action(raw, action_, ctx_);
  return t.changed() && to_byte(t.next) != raw;
}

StateCounts count_states(const ChunkImage& image) noexcept {
  const Geometry& geo = image.geometry();
  StateCounts n{0, 0, 0, 0, 0};
  for (std::uint64_t c = 0; c < geo.chunks(); ++c) {
    switch (decode_state(image.load_byte(geo.chunk_pos(c)))) {
      case ChunkState::kUnwritten:
        ++n.unwritten;
        break;
      case ChunkState::kClean:
        ++n.clean;
        break;
      case ChunkState::kDirty:
        ++n.dirty;
        break;
      case ChunkState::kSyncing:
        ++n.syncing;
        break;
      case ChunkState::kNeedSync:
      case ChunkState::kNone:
        ++n.need_sync;
        break;
    }
  }
  return n;
}

}  // namespace llbitmap::image_ops
