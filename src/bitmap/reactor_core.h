// SPDX-License-Identifier: LGPL-2.1-or-later
//
// reactor_core.h: ReactorCore, the state behind the public ReactorBitmap (reactor.h), and
// the reactor driver of the bitmap core: the admission of writes without waiting, the
// metadata IO it hands to the engine, and the cleaning pass as a step.
//
// ReactorBitmap has no data members; ReactorCore is the only class derived from it (its
// constructor is private and ReactorCore its friend), reached by a static_cast as Bitmap
// reaches BitmapImpl.
//
// What it owns: one PageBarrier per page, the ChunkImage (states, change numbers, stripe
// locks, superblock), the PersistCore (the persist queue, the plan of each round, the
// checksums), and three groups of driver state, each under its own spin lock:
//   io_lock_     the metadata IO: the open rounds and their outstanding requests, the
//                failed state's stale mark, the data-flush request, the open phases.
//   wait_lock_   the writes parked until a round completes (persist_waiters_) or until a
//                page reopens or open completes (retry_).
//   step_lock_   the cleaning pass (try-locked: a step that finds it held returns).
// result_lock_ (a flush's result) is a leaf, taken under step_lock_ or alone.
// Lock order: step_lock_, then io_lock_, then wait_lock_; the stripe locks (through
// ChunkImage and PersistCore) may be taken under any of them and take none. No lock is
// held across a callback into the engine: callbacks run only from ReactorQueue::poll()
// with nothing held.
//
// A ReactorWrite moves through: parked in retry_ (nothing held; retried from scratch by
// its queue's poll() once released), parked in persist_waiters_ (its pages held, its
// chunks marked; admitted when every block of its range is durable up to its change
// number), and the queue's ready stack (a final result, or a retry), from which poll()
// runs it.
#pragma once

#include <llbitmap/reactor.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <system_error>
#include <vector>

#include "chunk_image.h"
#include "loading.h"
#include "persist_core.h"
#include "spin_lock.h"

namespace llbitmap {

class ReactorCore final : public ReactorBitmap {
 public:
  ReactorCore(const Superblock& sb, Recovered recovered, const ReactorOptions& opt);
  ~ReactorCore() override;
  ReactorCore(const ReactorCore&) = delete;
  ReactorCore& operator=(const ReactorCore&) = delete;
  ReactorCore(ReactorCore&&) = delete;
  ReactorCore& operator=(ReactorCore&&) = delete;

  // The admission (ReactorQueue::start_write and start_discard, and their retries).
  Admit admit(ReactorQueue& q, std::uint64_t offset, std::uint64_t length, bool discard,
              ReactorWrite& w, std::error_code& ec);
  // Pushes `w` onto its queue's ready stack and signals the queue's eventfd.
  static void make_due(ReactorWrite& w) noexcept;

 private:
  friend class ReactorBitmap;
  friend class ReactorQueue;

  // The bits of refused_.
  static constexpr std::uint8_t kFailing = 1;  // a round failed: writes are refused
  static constexpr std::uint8_t kClosed = 2;   // a close finished (not busy)
  static constexpr std::uint8_t kOpening = 4;  // the recovered states are not durable yet

  // One outstanding metadata IO.
  enum class Role : std::uint8_t { kRoundWrite, kRoundSync, kStaleWrite, kStaleSync, kDataFlush };
  struct Slot {
    std::uint64_t id = 0;  // 0: free
    Role role = Role::kRoundWrite;
    std::uint64_t round = 0;  // kRoundWrite, kRoundSync: the OpenRound's number
    std::vector<std::byte> bytes;
  };
  // A persist round between begin_round and complete_round. It is writing until its sync
  // was handed out and every write of it completed; then (pipelined rounds) the next round
  // may begin while its sync is outstanding.
  struct OpenRound {
    PersistCore::Round round;
    std::uint64_t number = 0;
    std::size_t out = 0;    // its writes not completed
    bool sync_out = false;  // the sync was handed out
    std::error_code error;  // a write of it failed
  };

  // Open's two rounds (finish_round): the recovered states, then the superblock.
  enum class OpenPhase : std::uint8_t { kStates, kSuperblock, kReady };
  // The failed state's stale mark (next_io, complete): its writes, then its sync.
  enum class StalePhase : std::uint8_t {
    kNone,          // not failed
    kWritesToHand,  // the mark's writes are next
    kWritesOut,     // handed out, not all completed
    kSyncToHand,    // the sync is next
    kSyncOut,       // handed out
    kDone,          // completed: failed() is true
  };

  // The cleaning pass.
  enum class Phase : std::uint8_t {
    kIdle,        // between passes
    kSuspending,  // pages killed, waiting for the grace period and the drain
    kFlushing,    // the data flush was asked for
    kPersisting,  // Clean marked, waiting for its round
  };

  [[nodiscard]] bool in_device(std::uint64_t offset, std::uint64_t length) const noexcept {
    const std::uint64_t dev = image_.geometry().device_bytes();
    return length != 0 && offset < dev && length <= dev - offset;
  }
  [[nodiscard]] TransitionContext context() const noexcept;
  std::uint64_t change_chunk(std::uint64_t chunk, Action action, const TransitionContext& ctx);
  // image_ops::change_range through change_chunk: applies `action` to [first, last] and,
  // when `targets` is given, collects the blocks that must be durable.
  std::uint64_t change_range(std::uint64_t first, std::uint64_t last, Action action,
                             const TransitionContext& ctx, std::vector<Target>* targets);
  void release_pages(std::uint64_t first_page, std::uint64_t last_page) noexcept;
  // True if every block of w's chunks is durable up to w's change number (see admit()).
  [[nodiscard]] bool persisted(const ReactorWrite& w) const noexcept;
  // persisted(w), and every chunk of w still Dirty or NeedSync; a chunk another admission
  // changed meanwhile (an overlapping discard) is marked again and w keeps waiting.
  // Called under wait_lock_ (the stripe and queue locks it takes are leaves).
  [[nodiscard]] bool covered(ReactorWrite& w) LLBM_REQUIRES(wait_lock_);
  // Parks w for a retry, unless `still_blocked` turned false meanwhile (checked under
  // wait_lock_). Returns true if parked.
  template <class Blocked>
  bool park_retry(ReactorWrite& w, Blocked still_blocked);
  // Releases every write parked in retry_ to its queue (pages reopened, open done,
  // closed, failed).
  void release_retries() noexcept;
  // After a round completed (or failed): admits or refuses the persist waiters.
  void settle_persist_waiters() noexcept;

  // IO (io_lock_ held).
  Slot& new_slot(Role role) LLBM_REQUIRES(io_lock_);
  // One request of next_ios(). `began` turns true when the call begins the open round
  // (every write of that round is then in the call, before the sync).
  bool next_io_locked(MetaIo& io, bool& began) LLBM_REQUIRES(io_lock_);
  bool next_round_io(MetaIo& io, bool& began) LLBM_REQUIRES(io_lock_);
  // The writing round's sync is out and its writes completed: it moves to syncing_.
  void writes_done() LLBM_REQUIRES(io_lock_);
  // Completes `r` (the writing round, or one taken out of syncing_).
  void finish_round(OpenRound r, std::error_code ec) LLBM_REQUIRES(io_lock_);
  void fail(std::error_code ec) LLBM_REQUIRES(io_lock_);
  // The failed state's flag, as the IO side reads it (set by fail() under io_lock_).
  [[nodiscard]] bool failing() const LLBM_REQUIRES(io_lock_);
  // Ends the writing round when no sync will be handed out for it: its writes have all
  // completed, its sync is not out, and one of them failed or the bitmap failed. Returns
  // true if it ended one.
  bool end_unsyncable_round() LLBM_REQUIRES(io_lock_);

  // The cleaning pass (step_lock_ held).
  void step_locked(Clock::time_point now) LLBM_REQUIRES(step_lock_);
  bool start_pass(Clock::time_point now) LLBM_REQUIRES(step_lock_);
  void poll_suspends(Clock::time_point now) LLBM_REQUIRES(step_lock_);
  // Cleans the suspended pages (when `clean`), adds a close's superblock change, and
  // waits for their round.
  void clean_and_persist(bool clean) LLBM_REQUIRES(step_lock_);
  void end_pass(Clock::time_point now, std::error_code ec) LLBM_REQUIRES(step_lock_);
  void reopen_page(std::uint64_t page) noexcept;
  [[nodiscard]] bool targets_done() const noexcept LLBM_REQUIRES(step_lock_);

  // Fixed at construction.
  Clock* const clock_;
  const bool parity_;
  const bool data_flush_;
  const bool ordered_sync_;
  const bool pipelined_;
  const std::uint64_t invalid_bytes_;
  const std::uint64_t bad_blocks_;
  const bool out_of_date_;
  const std::uint64_t min_events_;
  const Uuid device_uuid_;

  // kFailing | kClosed | kOpening: the one word every admission loads first. Set and
  // cleared with release under io_lock_ (or step_lock_ for kClosed); loaded acquire by
  // admit(), so what the setter did (the durable states, the close) is seen.
  alignas(detail::kCacheLine) std::atomic<std::uint8_t> refused_{kOpening};
  // set_degraded's flag. relaxed: as BitmapImpl::degraded_.
  std::atomic<bool> degraded_{false};
  // A chunk turned Dirty since the last pass's re-arm check (seq_cst pair with the
  // page counts, as Daemon::armed_).
  std::atomic<bool> armed_{false};
  std::atomic<std::int64_t> sleep_ms_;
  std::atomic<bool> failure_final_{false};
  std::atomic<std::uint32_t> queues_{0};  // ReactorQueues attached

  PageList pages_;
  ChunkImage image_;
  PersistCore core_;

  alignas(detail::kCacheLine) mutable detail::SpinLock io_lock_;
  std::optional<OpenRound> writing_ LLBM_GUARDED_BY(io_lock_);  // the round being written
  std::vector<OpenRound> syncing_ LLBM_GUARDED_BY(io_lock_);    // writes done, sync out
  std::uint64_t next_round_ LLBM_GUARDED_BY(io_lock_) = 1;
  OpenPhase open_phase_ LLBM_GUARDED_BY(io_lock_) = OpenPhase::kStates;
  StalePhase stale_phase_ LLBM_GUARDED_BY(io_lock_) = StalePhase::kNone;
  std::size_t stale_out_ LLBM_GUARDED_BY(io_lock_) = 0;
  std::vector<PersistCore::OwnedWrite> stale_writes_ LLBM_GUARDED_BY(io_lock_);
  std::error_code failure_ LLBM_GUARDED_BY(io_lock_);
  bool flush_wanted_ LLBM_GUARDED_BY(io_lock_) = false;  // a kDataFlush to hand out
  bool flush_out_ LLBM_GUARDED_BY(io_lock_) = false;
  bool flush_done_ LLBM_GUARDED_BY(io_lock_) = false;
  std::error_code flush_ec_ LLBM_GUARDED_BY(io_lock_);
  std::vector<Slot> slots_ LLBM_GUARDED_BY(io_lock_);
  std::uint64_t next_id_ LLBM_GUARDED_BY(io_lock_) = 1;
  std::atomic<std::size_t> outstanding_{0};  // slots in use (io_outstanding)

  alignas(detail::kCacheLine) detail::SpinLock wait_lock_;
  ReactorWrite* retry_ LLBM_GUARDED_BY(wait_lock_) = nullptr;
  ReactorWrite* persist_waiters_ LLBM_GUARDED_BY(wait_lock_) = nullptr;

  alignas(detail::kCacheLine) detail::SpinLock step_lock_;
  Phase phase_ LLBM_GUARDED_BY(step_lock_) = Phase::kIdle;
  Clock::time_point last_pass_end_ LLBM_GUARDED_BY(step_lock_);
  bool pass_forced_ LLBM_GUARDED_BY(step_lock_) = false;
  bool pass_closing_ LLBM_GUARDED_BY(step_lock_) = false;
  std::vector<std::uint64_t> cand_ LLBM_GUARDED_BY(step_lock_);       // pages of the pass
  std::vector<std::uint8_t> cand_state_ LLBM_GUARDED_BY(step_lock_);  // SuspendPoll each
  std::vector<Target> targets_ LLBM_GUARDED_BY(step_lock_);
  std::vector<bool> timeout_logged_ LLBM_GUARDED_BY(step_lock_);
  // Requests from any thread, taken by the next step (relaxed flags, then step_lock_).
  std::atomic<bool> flush_requested_{false};
  std::atomic<bool> close_requested_{false};
  // Results (written under step_lock_, read with acquire after the state word).
  std::atomic<bool> flushed_{true};
  // A flush's result and flushed_'s turn to true are written together under it, so that
  // flush_result() never reads the result while a later flush's pass writes it.
  mutable detail::SpinLock result_lock_;
  std::error_code flush_result_ LLBM_GUARDED_BY(result_lock_);
  std::atomic<std::uint8_t> close_state_{0};  // CloseState
  std::error_code close_result_;              // guarded by the release/acquire of close_state_
  // The last close ended busy (close_state() reports it while kOpen). relaxed: a flag
  // next to close_state_, which orders it.
  std::atomic<bool> close_busy_{false};

  // relaxed: statistics only.
  std::atomic<std::uint64_t> rounds_{0}, blocks_written_{0}, pending_persist_{0}, pending_page_{0},
      passes_{0}, pages_cleaned_{0}, suspend_timeouts_{0}, data_flushes_{0};
};

inline ReactorCore& core_of(ReactorBitmap& b) noexcept {
  // The only class derived from ReactorBitmap (its constructor is private).
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-static-cast-downcast)
  return static_cast<ReactorCore&>(b);
}
inline const ReactorCore& core_of(const ReactorBitmap& b) noexcept {
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-static-cast-downcast)
  return static_cast<const ReactorCore&>(b);
}

}  // namespace llbitmap
