// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Persister: write-ahead persistence with group commit (docs/design.md#write-ahead-ordering,
// docs/design.md#group-commit); the contract is in persister.h.
//
// One persist round at a time. The thread that finds no round running becomes the
// leader: it opens a round of the planning core (PersistCore, which takes every queued
// block) and executes its requests on the Storage in order: each block is copied under
// its stripe lock together with the block's change number as its write is asked for and
// then written, then the checksum-table entries of the copies are written, then one sync;
// completing the round publishes each block's durable change number. Writers whose
// change is covered return; the others wait for the next round (which one of them
// leads). So:
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

#include <array>
#include <cstdio>
#include <optional>

#include "sync_point.h"

namespace llbitmap {

Persister::Persister(ChunkImage& image, std::unique_ptr<Storage> storage,
                     std::vector<std::uint32_t> crc)
    : image_(image), storage_(std::move(storage)), core_(image, std::move(crc)) {}

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
    for (std::size_t i = 0; i < n; ++i) core_.enqueue_target(targets[i]);
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
    if (!core_.has_queued()) return {};
    if (std::error_code ec = round()) return ec;
  }
}

std::error_code Persister::round() {
  running_ = true;
  std::optional<PersistCore::Round> planned = core_.begin_round();
  LLBM_CHECK(planned.has_value(), "Persister %p: a round opened while another is open",
             static_cast<void*>(this));
  mu_.unlock();

  PersistCore::Round& round = *planned;
  std::error_code ec;
  for (;;) {
    const PersistCore::Request req = core_.next_request(round);
    if (req.kind == PersistCore::Request::Kind::kSync) break;
    if (req.kind == PersistCore::Request::Kind::kBlock) LLBM_SYNC_POINT("persist:after_snapshot");
    if ((ec = storage_->write(req.offset, req.bytes))) break;
  }
  LLBM_SYNC_POINT("persist:before_sync");
  if (!ec) ec = storage_->sync();
  rounds_.fetch_add(1, std::memory_order_relaxed);
  blocks_written_.fetch_add(round.blocks().size(), std::memory_order_relaxed);
  if (ec) enter_failed_state();

  mu_.lock();
  running_ = false;
  if (!core_.complete_round(std::move(round), ec)) failure_ = ec;
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
  const std::array<PersistCore::OwnedWrite, 2> mark = core_.stale_mark_requests();
  if (!storage_->write(mark[0].offset, mark[0].bytes) &&
      !storage_->write(mark[1].offset, mark[1].bytes))
    (void)storage_->sync();
  // Only now does failed() say so: a caller that sees it may rely on the stale mark
  // having been made durable (or on the medium having refused that too). release: pairs
  // with the acquire load in failed().
  failure_final_.store(true, std::memory_order_release);
}

}  // namespace llbitmap
