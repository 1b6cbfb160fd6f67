// SPDX-License-Identifier: LGPL-2.1-or-later
//
// image_ops.h: what both drivers of the bitmap core (Bitmap, with its persister and daemon
// threads, and ReactorBitmap, whose IO the engine performs) do to a ChunkImage in the same
// way: the chunks a discard covers, a range of chunk changes with the blocks that must be
// durable, the cleaning of one suspended page, and the queries over every chunk.
//
// Contract: the functions here do no IO and never block; they take the stripe locks only
// through ChunkImage::change_chunk. `change` (change_range) and `enqueue` (clean_page)
// are the caller's: its own change_chunk (which queues the block and arms the cleaning)
// and its persist queue.
#pragma once

#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/format.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "chunk_image.h"

namespace llbitmap::image_ops {

// The chunks a discard of the in-device range [offset, offset + length) covers
// completely: [first, last], or first > last when it covers none. The device's last chunk
// counts as covered when the discard reaches the end (kernel: DIV_ROUND_UP for the
// start). No sum wraps, also for a device within one chunk of 2^64.
void discard_chunks(const Geometry& geo, std::uint64_t offset, std::uint64_t length,
                    std::uint64_t& first, std::uint64_t& last) noexcept;

// The states Startwrite leaves as they are in every context (degraded and parity only
// change what Unwritten and Clean become): a write to such a chunk needs no mark, only
// the durability check. Checked against the table in image_ops.cc.
[[nodiscard]] constexpr bool startwrite_keeps(std::uint8_t raw) noexcept {
  return raw == to_byte(ChunkState::kDirty) || raw == to_byte(ChunkState::kNeedSync) ||
         raw == to_byte(ChunkState::kSyncing);
}

// True if every chunk of [first, last] is one Startwrite keeps and is durably covered
// (ChunkImage::durably_covered): a write that holds their pages needs no persist.
[[nodiscard]] bool durably_covered(const ChunkImage& image, std::uint64_t first,
                                   std::uint64_t last) noexcept;

// Which bytes `action` changes in context `ctx`. For a long range (close_sync) the answer
// for all 256 byte values is computed once, so the scan costs a load and a table lookup
// per chunk; a short range asks the table directly.
class ChangeTable {
 public:
  ChangeTable(Action action, const TransitionContext& ctx, std::uint64_t chunks) noexcept;
  // True if the action changes a chunk whose byte is `raw`.
  [[nodiscard]] bool changes(std::uint8_t raw) const noexcept {
    return cached_ ? changes_[raw] : compute(raw);
  }

 private:
  [[nodiscard]] bool compute(std::uint8_t raw) const noexcept;
  Action action_;
  TransitionContext ctx_;
  bool cached_;
  bool changes_[256] = {};
};

// Applies `action` to every chunk of [first, last] through change(chunk, action, ctx)
// (which returns the block's new change number, or 0); when `targets` is given, collects
// each touched block with the change number that must be durable: the block's latest,
// loaded after every byte of the block was (acquire), so it covers this call's changes
// and every change whose byte the scan saw. Returns how many chunks changed.
template <class Change>
std::uint64_t change_range(const ChunkImage& image, std::uint64_t first, std::uint64_t last,
                           Action action, const TransitionContext& ctx,
                           std::vector<Target>* targets, Change&& change) {
  const Geometry& geo = image.geometry();
  const ChangeTable table(action, ctx, last - first + 1);
  std::uint64_t changed = 0;
  std::uint64_t c = first;
  while (c <= last) {
    const std::uint64_t block = geo.block_of_chunk(c);
    const std::uint64_t stop = std::min(last, geo.chunks_in_block(block).end - 1);
    for (; c <= stop; ++c) {
      const std::uint8_t raw = image.load_byte(geo.chunk_pos(c));
      if (!table.changes(raw)) continue;
      changed += change(c, action, ctx) != 0 ? 1 : 0;
    }
    if (targets == nullptr) continue;
    const std::uint64_t seq = image.dirty_seq(block);
    if (!targets->empty() && targets->back().block == block)
      targets->back().seq = std::max(targets->back().seq, seq);
    else
      targets->push_back(Target{block, seq});
  }
  return changed;
}

// Daemon on one suspended page: its Dirty chunks become Clean, block by block, until the
// page's Dirty count says none is left (a page with one Dirty chunk near its start is not
// scanned to the end). enqueue(block) is called for each block changed, which is added to
// `targets` with its latest change number. Cleaning never makes a chunk Dirty, so there
// is nothing to arm.
template <class Enqueue>
void clean_page(ChunkImage& image, std::uint64_t page, const TransitionContext& ctx,
                std::vector<Target>& targets, Enqueue&& enqueue) {
  const Geometry& geo = image.geometry();
  const ChunkRange r = geo.chunks_in_page(page);
  std::uint64_t c = r.first;
  while (c < r.end && image.page_has_dirty(page)) {
    const std::uint64_t block = geo.block_of_chunk(c);
    const std::uint64_t block_end = std::min(r.end, geo.chunks_in_block(block).end);
    bool changed = false;
    for (; c < block_end; ++c) {
      if (image.load_byte(geo.chunk_pos(c)) != to_byte(ChunkState::kDirty)) continue;
      if (image.change_chunk(c, Action::kDaemon, ctx).seq == 0) continue;
      enqueue(block);
      changed = true;
      if (!image.page_has_dirty(page)) {
        c = block_end;
        break;
      }
    }
    if (changed) targets.push_back(Target{block, image.dirty_seq(block)});
  }
}

// Starts the sync of one chunk as part of a `kind` pass (Bitmap::start_sync): true if the
// engine must copy it. A chunk a recovery (Dirty) or a rebuild (Dirty, Clean) must copy
// although the table's Startsync would leave it passes through Stale (NeedSync, dirty-like
// on disk, so a crash from here resyncs it), then Startsync makes it Syncing. Another
// thread may change it in between (a pass cleans a Dirty chunk, a write dirties a Clean
// one, a discard unwrites it); each outcome is still a state Startsync handles: at worst
// the chunk is copied once more. On a failed bitmap no chunk changes any more and the next
// open resyncs every written chunk (Stale), so every written chunk is copied now, as md
// resyncs everything when its bitmap is disabled. failed() is asked after the change, so
// a failure between the change and the answer is not missed.
template <class Change, class Failed>
bool start_sync(const ChunkImage& image, std::uint64_t chunk, SyncKind kind,
                const TransitionContext& ctx, Change&& change, Failed&& failed) {
  const auto state = [&] {
    return decode_state(image.load_byte(image.geometry().chunk_pos(chunk)));
  };
  if (kind != SyncKind::kResync) {
    const ChunkState before = state();
    if (before == ChunkState::kDirty ||
        (kind == SyncKind::kRebuild && before == ChunkState::kClean))
      change(chunk, Action::kStale, ctx);
  }
  change(chunk, Action::kStartsync, ctx);
  const ChunkState now = state();
  if (now == ChunkState::kSyncing) return true;
  return failed() && now != ChunkState::kUnwritten;
}

// The runs of chunks whose state satisfies `pred`: clipped to the device (the last chunk
// may be short), adjacent chunks merged, ascending.
template <class Pred>
std::vector<std::pair<std::uint64_t, std::uint64_t>> runs_where(const ChunkImage& image,
                                                                Pred pred) {
  const Geometry& geo = image.geometry();
  std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
  const std::uint64_t dev = geo.device_bytes();
  for (std::uint64_t c = 0; c < geo.chunks(); ++c) {
    if (!pred(decode_state(image.load_byte(geo.chunk_pos(c))))) continue;
    const std::uint64_t off = geo.chunk_offset(c);
    const std::uint64_t len = std::min(geo.chunk_bytes(), dev - off);
    if (!runs.empty() && runs.back().first + runs.back().second == off)
      runs.back().second += len;
    else
      runs.emplace_back(off, len);
  }
  return runs;
}

// How many chunks are in each state (an invalid byte counts as NeedSync).
[[nodiscard]] StateCounts count_states(const ChunkImage& image) noexcept;

}  // namespace llbitmap::image_ops
