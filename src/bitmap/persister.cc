// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Persister: write-ahead persistence with group commit (docs/design.md#write-ahead-ordering,
// docs/design.md#group-commit); the contract is in persister.h.
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
// trusted; docs/design.md#failure-rule); the superblock is then marked stale, best
// effort, with one more write+sync.
#include "persister.h"

#include <llbitmap/detail/check.h>
#include <llbitmap/error.h>

#include <algorithm>
#include <cstdio>

#include "sync_point.h"

namespace llbitmap {

Persister::Persister(ChunkImage& image, std::unique_ptr<Storage> storage,
                     std::vector<std::uint32_t> crc)
    : image_(image), storage_(std::move(storage)), crc_(std::move(crc)) {
  const std::uint64_t blocks = image_.geometry().blocks();
  LLBM_CHECK(crc_.size() == blocks, "Persister: %zu checksums for %llu blocks", crc_.size(),
             static_cast<unsigned long long>(blocks));
  detail::MutexLock lock(mu_);
  queued_.assign(blocks, true);
  pending_.reserve(blocks);
  for (std::uint64_t b = 0; b < blocks; ++b) pending_.push_back(b);
}

void Persister::enqueue(std::uint64_t block) noexcept {
  detail::MutexLock lock(mu_);
  if (!queued_[block]) {
    queued_[block] = true;
    pending_.push_back(block);
  }
}

std::error_code Persister::failure() const {
  return failure_ ? failure_ : make_error_code(Errc::bitmap_failed);
}

std::error_code Persister::persist(const Target* targets, std::size_t n) {
  auto durable = [&] {
    for (std::size_t i = 0; i < n; ++i) {
      if (image_.durable_seq(targets[i].block) < targets[i].seq) return false;
    }
    return true;
  };
  if (durable()) return {};
  waits_.fetch_add(1, std::memory_order_relaxed);
  detail::MutexLock lock(mu_);
  for (;;) {
    if (durable()) return {};
    // acquire (pairs with enter_failed_state's release store); mu_ orders it as well.
    if (failing(std::memory_order_acquire)) return failure();
    if (running_) {
      cv_.wait(mu_);
      continue;
    }
    // Make sure the blocks are queued even if the thread that changed them has not
    // queued them yet (it does so right after it drops the stripe lock).
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t b = targets[i].block;
      if (!queued_[b] && image_.durable_seq(b) < targets[i].seq) {
        queued_[b] = true;
        pending_.push_back(b);
      }
    }
    if (std::error_code ec = round()) return ec;
  }
}

std::error_code Persister::persist_all() {
  detail::MutexLock lock(mu_);
  for (;;) {
    // acquire (pairs with enter_failed_state's release store); mu_ orders it as well.
    if (failing(std::memory_order_acquire)) return failure();
    if (running_) {
      cv_.wait(mu_);
      continue;
    }
    if (pending_.empty()) return {};
    if (std::error_code ec = round()) return ec;
  }
}

std::error_code Persister::round() {
  running_ = true;
  std::vector<std::uint64_t> blocks;
  blocks.swap(pending_);
  for (std::uint64_t b : blocks) queued_[b] = false;
  mu_.unlock();

  const Geometry& geo = image_.geometry();
  std::sort(blocks.begin(), blocks.end());
  const std::uint32_t bs = geo.block_bytes();
  std::vector<std::byte> buf(bs);
  std::vector<std::uint64_t> seqs(blocks.size());
  std::error_code ec;
  for (std::size_t i = 0; i < blocks.size() && !ec; ++i) {
    const std::uint64_t b = blocks[i];
    seqs[i] = image_.snapshot_block(b, buf);
    crc_[b] = block_crc(b, image_.uuid(), buf);
    LLBM_SYNC_POINT("persist:after_snapshot");
    ec = storage_->write(b * bs, buf);
  }
  // The checksum-table blocks that hold the entries of the blocks just written.
  std::uint64_t last_table_block = UINT64_MAX;
  for (std::size_t i = 0; i < blocks.size() && !ec; ++i) {
    const std::uint64_t tb = (geo.checksum_offset(blocks[i]) - geo.checksum_table_offset()) / bs;
    if (tb == last_table_block) continue;
    last_table_block = tb;
    std::fill(buf.begin(), buf.end(), std::byte{0});
    const std::uint64_t first_entry = tb * bs / 4;
    for (std::uint64_t e = 0; e < bs / 4 && first_entry + e < geo.blocks(); ++e)
      store_le32(std::span<std::byte, 4>(buf.data() + e * 4, 4), crc_[first_entry + e]);
    ec = storage_->write(geo.checksum_table_offset() + tb * bs, buf);
  }
  LLBM_SYNC_POINT("persist:before_sync");
  if (!ec) ec = storage_->sync();
  rounds_.fetch_add(1, std::memory_order_relaxed);
  blocks_written_.fetch_add(blocks.size(), std::memory_order_relaxed);
  if (ec) enter_failed_state();

  mu_.lock();
  running_ = false;
  if (ec) {
    failure_ = ec;
  } else {
    for (std::size_t i = 0; i < blocks.size(); ++i) image_.publish_durable(blocks[i], seqs[i]);
  }
  cv_.notify_all();
  return ec;
}

// Nothing written by the failed round may be trusted, and no retry is: the bitmap
// refuses further writes, and the superblock is marked stale so that the next open
// resyncs every written chunk.
void Persister::enter_failed_state() noexcept {
  // release: pairs with the acquire entry checks of the write path and the daemon (the
  // flag publishes nothing else; see failed_).
  failed_.fetch_or(kFailing, std::memory_order_release);
  std::fprintf(stderr,
               "llbitmap: bitmap persist failed: bitmap is now failed, next open resyncs "
               "every written chunk\n");
  const Geometry& geo = image_.geometry();
  const std::uint32_t bs = geo.block_bytes();
  std::vector<std::byte> buf(bs);
  image_.mark_superblock_and_snapshot(kSbStale | kSbWriteError, buf);
  crc_[0] = block_crc(0, image_.uuid(), buf);
  std::vector<std::byte> table(bs, std::byte{0});
  for (std::uint64_t e = 0; e < bs / 4 && e < geo.blocks(); ++e)
    store_le32(std::span<std::byte, 4>(table.data() + e * 4, 4), crc_[e]);
  if (!storage_->write(0, buf) && !storage_->write(geo.checksum_table_offset(), table))
    (void)storage_->sync();
  // Only now does failed() say so: a caller that sees it may rely on the stale mark
  // having been made durable (or on the medium having refused that too). release: pairs
  // with the acquire load in failed().
  failure_final_.store(true, std::memory_order_release);
}

}  // namespace llbitmap
