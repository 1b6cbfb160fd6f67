// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Bitmap persistence: write-ahead with group commit (SPEC §5, §6).
//
// One persist round at a time. The thread that finds no round running becomes the
// leader: it takes every queued block, copies each under its stripe lock together with
// the block's change number, writes the copies and their checksum-table entries, syncs
// once, and then publishes each block's durable change number. Writers whose change is
// covered return; the others wait for the next round (which one of them leads). So:
//   S2  start_write returns only after a sync that followed its change, also when its
//       byte was already Dirty because another thread's persist is still in flight;
//   S3  two snapshots of one block are never in flight together, so never reordered;
//   group commit: every writer that dirtied a block before the leader copied it shares
//       the leader's sync.
// A failed write or sync puts the bitmap in the failed state for good (no retry is
// trusted); the superblock is then marked stale, best effort, with one more write+sync.
#include <llbitmap/bitmap.h>
#include <llbitmap/detail/check.h>

#include <algorithm>
#include <cstring>

#include "bitmap_internal.h"
#include "sync_point.h"

namespace llbitmap {

void Bitmap::enqueue_block(std::uint64_t block) noexcept {
  std::lock_guard lk(persist_mu_);
  if (!blocks_[block].queued) {
    blocks_[block].queued = true;
    pending_blocks_.push_back(block);
  }
}

std::error_code Bitmap::persist_targets(const Target* targets, std::size_t n) {
  auto durable = [&] {
    for (std::size_t i = 0; i < n; ++i) {
      if (blocks_[targets[i].block].durable_seq.load(std::memory_order_acquire) < targets[i].seq)
        return false;
    }
    return true;
  };
  if (durable()) return {};
  persist_waits_.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock lk(persist_mu_);
  for (;;) {
    if (durable()) return {};
    if (failed_.load(std::memory_order_acquire))
      return failure_ ? failure_ : make_error_code(Errc::bitmap_failed);
    if (persisting_) {
      persist_cv_.wait(lk);
      continue;
    }
    // Make sure the blocks are queued even if the thread that changed them has not
    // queued them yet (it does so right after it drops the stripe lock).
    for (std::size_t i = 0; i < n; ++i) {
      BlockCtl& b = blocks_[targets[i].block];
      if (!b.queued && b.durable_seq.load(std::memory_order_acquire) < targets[i].seq) {
        b.queued = true;
        pending_blocks_.push_back(targets[i].block);
      }
    }
    if (std::error_code ec = persist_round(lk)) return ec;
  }
}

std::error_code Bitmap::persist_all() {
  std::unique_lock lk(persist_mu_);
  for (;;) {
    if (failed_.load(std::memory_order_acquire))
      return failure_ ? failure_ : make_error_code(Errc::bitmap_failed);
    if (persisting_) {
      persist_cv_.wait(lk);
      continue;
    }
    if (pending_blocks_.empty()) return {};
    if (std::error_code ec = persist_round(lk)) return ec;
  }
}

// Requires: lk holds persist_mu_ and no round is running. Returns with lk held.
std::error_code Bitmap::persist_round(std::unique_lock<std::mutex>& lk) {
  persisting_ = true;
  std::vector<std::uint64_t> blocks;
  blocks.swap(pending_blocks_);
  for (std::uint64_t b : blocks) blocks_[b].queued = false;
  lk.unlock();

  std::sort(blocks.begin(), blocks.end());
  const std::uint32_t bs = geo_.block_bytes();
  std::vector<std::byte> buf(bs);
  std::vector<std::uint64_t> seqs(blocks.size());
  std::error_code ec;
  for (std::size_t i = 0; i < blocks.size() && !ec; ++i) {
    const std::uint64_t b = blocks[i];
    {
      std::lock_guard sl(block_lock(b));
      seqs[i] = blocks_[b].dirty_seq.load(std::memory_order_relaxed);
      // Every store to these bytes happens under this lock, so a plain copy is exact.
      std::memcpy(buf.data(), image_.get() + b * bs, bs);
      if (b == 0) sb_.encode(std::span<std::byte, kSuperblockBytes>(buf.data(), kSuperblockBytes));
    }
    crc_[b] = block_crc(b, sb_.uuid, buf);
    LLBM_SYNC_POINT("persist:after_snapshot");
    ec = storage_->write(b * bs, buf);
  }
  // The checksum-table blocks that hold the entries of the blocks just written.
  std::uint64_t last_table_block = UINT64_MAX;
  for (std::size_t i = 0; i < blocks.size() && !ec; ++i) {
    const std::uint64_t tb = (geo_.checksum_offset(blocks[i]) - geo_.checksum_table_offset()) / bs;
    if (tb == last_table_block) continue;
    last_table_block = tb;
    std::fill(buf.begin(), buf.end(), std::byte{0});
    const std::uint64_t first_entry = tb * bs / 4;
    for (std::uint64_t e = 0; e < bs / 4 && first_entry + e < geo_.blocks(); ++e)
      store_le32(std::span<std::byte, 4>(buf.data() + e * 4, 4), crc_[first_entry + e]);
    ec = storage_->write(geo_.checksum_table_offset() + tb * bs, buf);
  }
  LLBM_SYNC_POINT("persist:before_sync");
  if (!ec) ec = storage_->sync();
  persist_rounds_.fetch_add(1, std::memory_order_relaxed);
  blocks_written_.fetch_add(blocks.size(), std::memory_order_relaxed);
  if (ec) enter_failed_state();

  lk.lock();
  persisting_ = false;
  if (ec) {
    failure_ = ec;
  } else {
    for (std::size_t i = 0; i < blocks.size(); ++i)
      blocks_[blocks[i]].durable_seq.store(seqs[i], std::memory_order_release);
  }
  persist_cv_.notify_all();
  return ec;
}

// Called by the leader of a failed round (no other round can run). Nothing written by
// the failed round may be trusted, and no retry is: the bitmap refuses further writes,
// and the superblock is marked stale so that the next open resyncs every written chunk.
void Bitmap::enter_failed_state() noexcept {
  failed_.store(true, std::memory_order_release);
  std::fprintf(stderr,
               "llbitmap: bitmap persist failed: bitmap is now failed, next open resyncs "
               "every written chunk\n");
  const std::uint32_t bs = geo_.block_bytes();
  std::vector<std::byte> buf(bs);
  {
    std::lock_guard sl(block_lock(0));
    sb_.state |= kSbStale | kSbWriteError;
    std::memcpy(buf.data(), image_.get(), bs);
    sb_.encode(std::span<std::byte, kSuperblockBytes>(buf.data(), kSuperblockBytes));
  }
  crc_[0] = block_crc(0, sb_.uuid, buf);
  std::vector<std::byte> table(bs, std::byte{0});
  for (std::uint64_t e = 0; e < bs / 4 && e < geo_.blocks(); ++e)
    store_le32(std::span<std::byte, 4>(table.data() + e * 4, 4), crc_[e]);
  if (!storage_->write(0, buf) && !storage_->write(geo_.checksum_table_offset(), table))
    (void)storage_->sync();
  // Only now does failed() say so: a caller that sees it may rely on the stale mark
  // having been made durable (or on the medium having refused that too).
  failure_final_.store(true, std::memory_order_release);
}

}  // namespace llbitmap
