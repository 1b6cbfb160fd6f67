// SPDX-License-Identifier: LGPL-2.1-or-later
//
// persister.h: Persister, the write-ahead persistence of one bitmap with group commit
// (docs/design.md#write-ahead-ordering, docs/design.md#group-commit), and its failed
// state (docs/design.md#failure-rule).
//
// Contract:
//   - enqueue(block): called after every change of a block (the write path, the daemon,
//     the setters) once the block's stripe lock is dropped. Queues it in the planning
//     core (PersistCore, persist_core.h), whose queue lock it takes briefly; never blocks
//     otherwise. Queuing is idempotent.
//   - persist(targets): called by start_write and by a daemon pass; returns once every
//     target's change number is durable, or with the error of the round that failed. One
//     round runs at a time; the caller that finds none running leads one: it opens a
//     round of the core (every queued block), executes the round's requests on the
//     Storage in order (each block's snapshot write, then its checksum-table blocks),
//     syncs once and completes the round, which publishes the durable change numbers;
//     the others wait on cv_ for it and lead the next one if still needed. So every
//     writer that changed a block before the leader copied it shares that sync, and two
//     snapshots of one block are never in flight together.
//   - persist_all(): the same for every queued block (open, flush, close).
//   - Blocks: persist and persist_all wait for rounds and do IO; enqueue does not.
//   - Locks: mu_ guards the round flag and the error; it is never held across IO and
//     never taken under a stripe lock. The core's queue lock is taken under mu_ (to open
//     a round) or alone. The leader takes stripe locks (through the core's snapshots)
//     without holding mu_.
//   - Failure: a failed write or sync makes the bitmap failed for good. failing() turns
//     true first (writes are refused and the transition table changes nothing any more);
//     the superblock is then marked stale with one best-effort write and sync (the core's
//     stale_mark_requests), and only then does failed() (the public Bitmap::failed) turn
//     true.
//   - Closed: set_closed() is Bitmap::close()'s last step; it shares the failed flag's
//     word (refused()), so start_write refuses a closed bitmap with the load it already
//     makes for the failed state.
#pragma once

#include <llbitmap/detail/cacheline.h>
#include <llbitmap/detail/mutex.h>
#include <llbitmap/storage.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <system_error>
#include <vector>

#include "chunk_image.h"
#include "persist_core.h"

namespace llbitmap {

class Persister {
 public:
  // `crc` holds the checksum the file stores for every block. Every block is queued:
  // the first persist_all rewrites the whole image and a fresh checksum table (see
  // PersistCore).
  Persister(ChunkImage& image, std::unique_ptr<Storage> storage, std::vector<std::uint32_t> crc);
  Persister(const Persister&) = delete;
  Persister& operator=(const Persister&) = delete;

  void enqueue(std::uint64_t block) noexcept { core_.enqueue(block); }
  std::error_code persist(const Target* targets, std::size_t n) LLBM_EXCLUDES(mu_);
  std::error_code persist_all() LLBM_EXCLUDES(mu_);

  // The bits of refused(): why start_write refuses (both may be set).
  static constexpr std::uint8_t kFailing = 1;  // the failed state (enter_failed_state)
  static constexpr std::uint8_t kClosed = 2;   // Bitmap::close() is done (set_closed)
  // The failed state, as the write path and the daemon see it: writes are refused and
  // nothing is cleaned. The order is the caller's: release/acquire (see failed_) or
  // relaxed where only the flag itself matters.
  [[nodiscard]] bool failing(std::memory_order order) const noexcept {
    return (failed_.load(order) & kFailing) != 0;
  }
  // kFailing | kClosed: the one word the write path's entry check loads, so that a
  // closed bitmap costs it no extra load. Same orders as failing().
  [[nodiscard]] std::uint8_t refused(std::memory_order order) const noexcept {
    return failed_.load(order);
  }
  // Called once by Bitmap::close() when it is done, before it resumes the pages; nothing
  // is persisted afterwards (every entry point that would persist refuses first).
  void set_closed() noexcept {
    // release: pairs with the acquire entry checks of the write path (see failed_).
    failed_.fetch_or(kClosed, std::memory_order_release);
  }
  // Bitmap::failed(): the failure is final and the stale mark is durable (or was refused).
  // acquire: pairs with the release store at the end of enter_failed_state, so the caller
  // also sees the stale mark's write and sync as done.
  [[nodiscard]] bool failed() const noexcept {
    return failure_final_.load(std::memory_order_acquire);
  }

  // relaxed: statistics only.
  [[nodiscard]] std::uint64_t rounds() const noexcept {
    return rounds_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t blocks_written() const noexcept {
    return blocks_written_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t waits() const noexcept {
    return waits_.load(std::memory_order_relaxed);
  }

 private:
  // Runs one round as its leader. Requires mu_ held and no round running; drops mu_ for
  // the IO and returns with it held again.
  std::error_code round() LLBM_REQUIRES(mu_);
  // Called by the leader of a failed round, without mu_.
  void enter_failed_state() noexcept LLBM_EXCLUDES(mu_);
  std::error_code failure() const LLBM_REQUIRES(mu_);

  // Read by every write (Bitmap::start_write): first, on a line of its own.
  // failed_ (named for its first bit; kClosed shares the word so that the entry check
  // stays one load): kFailing is set once, by the leader of a failed round, release;
  // kClosed once, by set_closed, release. The write path and the daemon load it acquire (on
  // their entry checks) or relaxed (the re-checks that only need the flag). kFailing
  // publishes no data: what the persister itself must see of a failure it reads under
  // mu_ (failure_), and every later round leader takes mu_ after the failed leader
  // released it, so mu_ orders the flag for persist() and persist_all().
  alignas(detail::kCacheLine) std::atomic<std::uint8_t> failed_{0};
  // Bitmap::failed(): stored (release) after the stale mark's write and sync.
  std::atomic<bool> failure_final_{false};

  ChunkImage& image_;
  const std::unique_ptr<Storage> storage_;
  // The queue, the plan of each round and the checksum state.
  PersistCore core_;

  alignas(detail::kCacheLine) mutable detail::Mutex mu_;
  detail::CondVar cv_;                            // a round ended
  bool running_ LLBM_GUARDED_BY(mu_) = false;     // a round is running
  std::error_code failure_ LLBM_GUARDED_BY(mu_);  // the failed round's error

  // relaxed: statistics only.
  std::atomic<std::uint64_t> rounds_{0}, blocks_written_{0}, waits_{0};
};

}  // namespace llbitmap
