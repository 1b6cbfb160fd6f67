// SPDX-License-Identifier: LGPL-2.1-or-later
//
// chunk_image.h: ChunkImage, the in-memory image of one bitmap that the write path
// (bitmap.cc), the Persister and the Daemon share: the state bytes, every block's change
// numbers and stripe lock, the superblock, and every page's count of Dirty chunks.
//
// Contract:
//   - A state byte is read by anyone, without a lock (load_byte, acquire). It is changed
//     only by change_chunk, under its block's stripe lock, which first bumps the block's
//     change number (dirty_seq, release) and then stores the byte (release). So a thread
//     that loads a byte and then the block's dirty_seq sees a change number at least as
//     new as the change that stored that byte; if durable_seq has reached it, the byte it
//     saw is on stable storage.
//   - durable_seq is published only by the persist driver (publish_durable, release,
//     monotonic) after a sync that covered a snapshot taken at that change number.
//   - Covered bits, one per image byte (durably_covered): set only while the byte is
//     dirty-like (a crash would resync the chunk) in the newest durable snapshot of its
//     block and in every snapshot taken after it, which may still land. snapshot_block
//     clears the bits its copy holds clean-like; publish_durable sets them from the
//     snapshot it publishes only if that is the newest one taken. So a write to a chunk
//     that is dirty-like now and durably covered needs no persist, even while changes to
//     other chunks of its block are not yet durable (docs/design.md#write-ahead-ordering).
//   - snapshot_block copies a block (and encodes the superblock into block 0) under the
//     block's stripe lock, so the copy holds every change up to the change number it
//     returns and none after it.
//   - The superblock is guarded by the stripe lock of block 0 (the block it is encoded
//     into), so a snapshot of block 0 always holds a consistent superblock.
//   - A page's Dirty count changes only in change_chunk, under the stripe lock of the
//     chunk's block; it is exact whenever no change_chunk is running on that page.
// The stripe locks are spin locks (spin_lock.h: a reactor thread takes them too) and leaves:
// held for a few loads and stores or one block copy (with its covered bits), never across
// IO, a wait or another lock. Nothing here blocks otherwise, allocates after construction
// or does IO.
#pragma once

#include <llbitmap/chunk_state.h>
#include <llbitmap/detail/cacheline.h>
#include <llbitmap/format.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "spin_lock.h"

// lock_returned is not among the project-wide annotations; it is only needed here.
#define LLBM_LOCK_RETURNED(x) LLBM_THREAD_ANNOTATION(lock_returned(x))

namespace llbitmap {

// A block and the change number of it that must be durable.
struct Target {
  std::uint64_t block;
  std::uint64_t seq;
};

// The transition context of a bitmap in one state. Every caller reads the flags it is
// made of with the orders it documents.
[[nodiscard]] constexpr TransitionContext transition_context(bool degraded, bool parity,
                                                             bool failed) noexcept {
  return TransitionContext{.degraded = degraded, .parity = parity, .write_error = failed};
}

class ChunkImage {
 public:
  static constexpr std::size_t kStripes = 64;

  // What one change_chunk did.
  struct Change {
    std::uint64_t seq = 0;  // the block's new change number; 0: nothing changed
    bool dirtied = false;   // the chunk became Dirty (the caller arms the daemon)
  };

  // Takes the recovered image (image_bytes() long). Every block gets change number 1
  // (open rewrites every block), and the Dirty chunks are counted per page.
  ChunkImage(const Superblock& sb, std::span<const std::byte> image);
  ChunkImage(const ChunkImage&) = delete;
  ChunkImage& operator=(const ChunkImage&) = delete;
  ChunkImage(ChunkImage&&) = delete;
  ChunkImage& operator=(ChunkImage&&) = delete;
  ~ChunkImage() = default;

  [[nodiscard]] const Geometry& geometry() const noexcept { return geo_; }
  [[nodiscard]] const Uuid& uuid() const noexcept { return uuid_; }

  // The byte at image position pos. acquire: pairs with the release store of the byte in
  // change_chunk, so a dirty_seq loaded after it is at least the number of that change.
  [[nodiscard]] std::uint8_t load_byte(std::uint64_t pos) const noexcept {
    return std::atomic_ref<std::uint8_t>(bytes_[pos]).load(std::memory_order_acquire);
  }
  // The change number of the block's last change. acquire: pairs with the release store
  // in bump_block (a byte loaded after it is at least that change's).
  [[nodiscard]] std::uint64_t dirty_seq(std::uint64_t block) const noexcept {
    return blocks_[block].dirty_seq.load(std::memory_order_acquire);
  }
  // The change number the file has synced. acquire: pairs with the release store in
  // publish_durable, made by the round leader after its sync returned.
  [[nodiscard]] std::uint64_t durable_seq(std::uint64_t block) const noexcept {
    return blocks_[block].durable_seq.load(std::memory_order_acquire);
  }
  // True if the block's last change is durable.
  // dirty_seq first, then durable_seq, both acquire (see the two accessors above).
  [[nodiscard]] bool block_durable(std::uint64_t block) const noexcept {
    const BlockSeq& b = blocks_[block];
    const std::uint64_t seq = b.dirty_seq.load(std::memory_order_acquire);
    return b.durable_seq.load(std::memory_order_acquire) >= seq;
  }
  // True if image position pos is dirty-like in the newest durable snapshot of its block
  // and in every snapshot of it taken since (see the contract). A write to a chunk whose
  // byte is dirty-like now and durably covered needs no persist: whatever of its block
  // lands, the chunk reopens as needing a resync. acquire: pairs with the release stores
  // of publish_durable, made after the sync returned.
  [[nodiscard]] bool durably_covered(std::uint64_t pos) const noexcept {
    return ((covered_[pos >> 6].load(std::memory_order_acquire) >> (pos & 63)) & 1) != 0;
  }
  // The persist driver only, after a sync that covered a snapshot with change number
  // seq. Raises the number, never lowers it: rounds may complete out of order. Sets the
  // block's covered bits from the snapshot if no newer one was taken. Takes the block's
  // stripe lock. release: pairs with the acquire loads in durable_seq and durably_covered.
  void publish_durable(std::uint64_t block, std::uint64_t seq) noexcept;
  // The dirty-like bits of `bytes` (a multiple of 64 long) into bits (bytes.size() / 64
  // words): bit i of word w set when byte 64 w + i is dirty-like.
  static void dirty_like_bits(std::span<const std::byte> bytes,
                              std::span<std::uint64_t> bits) noexcept;

  // The stripe lock of a block. The analysis cannot tell which stripe a block number
  // selects, so functions that need one take it by reference (bump_block); see stripes_.
  [[nodiscard]] detail::SpinLock& block_lock(std::uint64_t block) const noexcept {
    return stripes_[block % kStripes];
  }
  // The lock of block 0, which guards the superblock.
  [[nodiscard]] detail::SpinLock& superblock_lock() const noexcept LLBM_LOCK_RETURNED(stripes_[0]) {
    return stripes_[0];
  }
  [[nodiscard]] Superblock& superblock() LLBM_REQUIRES(stripes_[0]) { return sb_; }

  // Gives the block a new change number and returns it. Requires: `held` is the block's
  // stripe lock (checked in debug builds) and is held by the caller.
  std::uint64_t bump_block(detail::SpinLock& held, std::uint64_t block) noexcept
      LLBM_REQUIRES(held);

  // Applies `action` to one chunk under its block's lock: bumps the change number, stores
  // the byte, keeps the page's Dirty count. Takes and drops the block's stripe lock.
  Change change_chunk(std::uint64_t chunk, Action action, const TransitionContext& ctx) noexcept;

  // Copies block b into buf (block_bytes() long) under its stripe lock; block 0 also
  // gets the encoded superblock. Returns the change number the copy is exact for.
  std::uint64_t snapshot_block(std::uint64_t block, std::span<std::byte> buf) noexcept;
  // Sets `flags` in the superblock and copies block 0 as snapshot_block does, without a
  // new change number (the failed state: no later round will publish one).
  void mark_superblock_and_snapshot(std::uint32_t flags, std::span<std::byte> buf) noexcept;

  // True if the page holds a Dirty chunk. relaxed: a hint for choosing pages to clean;
  // a count that changes meanwhile is found by the next pass or re-arms the daemon.
  [[nodiscard]] bool page_has_dirty(std::uint64_t page) const noexcept {
    return page_dirty_[page].load(std::memory_order_relaxed) != 0;
  }
  // True if any page holds a Dirty chunk, read with seq_cst loads: the daemon's re-arm
  // check (see Daemon::pass; pairs with the seq_cst increment in change_chunk).
  [[nodiscard]] bool any_page_dirty() const noexcept;
  // True if some chunk was Dirty at construction.
  [[nodiscard]] bool dirty_at_open() const noexcept { return dirty_at_open_; }

 private:
  struct BlockSeq {
    std::atomic<std::uint64_t> dirty_seq{0};    // change number of the last change
    std::atomic<std::uint64_t> durable_seq{0};  // change number the file has synced
    std::uint64_t taken_seq = 0;  // of the newest snapshot taken (under the stripe lock)
  };

  // After copying block `block` (change number seq) into buf: the copy's bits become the
  // block's newest taken bits and clear the covered bits it holds clean-like. Requires:
  // `held` is the block's stripe lock (checked in debug builds) and is held.
  void take_bits(detail::SpinLock& held, std::uint64_t block, std::uint64_t seq,
                 std::span<const std::byte> buf) noexcept LLBM_REQUIRES(held);
  // Stores word i of the covered bits, if it changes. Under the stripe lock of its block.
  void store_covered(std::size_t i, std::uint64_t bits) noexcept;

  // Read by every write; written only at construction.
  const Geometry geo_;
  const Uuid uuid_;
  // The superblock area and the state bytes, accessed through std::atomic_ref. Stores
  // happen under the block's stripe lock; loads need none.
  const std::unique_ptr<std::uint8_t[]> bytes_;
  const std::unique_ptr<BlockSeq[]> blocks_;
  // Per image byte, one bit (the contract): covered_ is read by every write that finds
  // its chunk dirty-like and stored under the block's stripe lock; taken_ holds the
  // dirty-like bits of each block's newest snapshot taken (stripe lock).
  const std::unique_ptr<std::atomic<std::uint64_t>[]> covered_;
  const std::unique_ptr<std::uint64_t[]> taken_;
  // Per page: how many of its chunks are Dirty. Changed only in change_chunk, under the
  // stripe lock of the chunk's block (not annotated: which stripe depends on the chunk),
  // so a daemon pass finds the pages to clean and decides to re-arm without reading every
  // state byte.
  const std::unique_ptr<std::atomic<std::uint32_t>[]> page_dirty_;
  bool dirty_at_open_ = false;

  // Bumped by every change: kept off the lines the fast path reads.
  alignas(detail::kCacheLine) std::atomic<std::uint64_t> change_seq_{1};

  // Block b is guarded by stripes_[b % kStripes]. The thread-safety analysis has no way
  // to name "the stripe of block b" for a block number known only at run time, so the
  // state bytes and change numbers carry no LLBM_GUARDED_BY, block_lock() returns an
  // unnamed capability, and bump_block checks at run time (debug builds) that the lock it
  // was handed is the block's. Only the superblock, always behind stripes_[0], is
  // annotated.
  alignas(detail::kCacheLine) mutable detail::SpinLock stripes_[kStripes];
  Superblock sb_ LLBM_GUARDED_BY(stripes_[0]);
};

}  // namespace llbitmap
