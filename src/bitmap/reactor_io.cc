// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The reactor driver's metadata IO (reactor_core.h): persist rounds, the failed state's
// stale mark and the data flush, handed to the engine by next_io and completed by it.
#include <llbitmap/detail/check.h>
#include <llbitmap/reactor.h>

#include <algorithm>
#include <cstdio>

#include "reactor_core.h"
#include "sync_point.h"

namespace llbitmap {

namespace {
using ull = unsigned long long;
}  // namespace

// ------------------------------------------------------------------ metadata IO

ReactorCore::Slot& ReactorCore::new_slot(Role role) {
  Slot* s = nullptr;
  for (Slot& x : slots_)
    if (x.id == 0) {
      s = &x;
      break;
    }
  if (s == nullptr) s = &slots_.emplace_back();
  s->id = next_id_++;
  s->role = role;
  s->bytes.clear();
  outstanding_.fetch_add(1, std::memory_order_relaxed);  // relaxed: a count for queries
  return *s;
}

bool ReactorBitmap::next_io(MetaIo& io) {
  return next_ios(std::span<MetaIo>(&io, 1)) == 1;
}

std::size_t ReactorBitmap::next_ios(std::span<MetaIo> out) {
  ReactorCore& s = core_of(*this);
  detail::SpinLockGuard lock(s.io_lock_);
  bool began = false;
  std::size_t n = 0;
  while (n < out.size() && s.next_io_locked(out[n], began)) ++n;
  return n;
}

bool ReactorCore::next_io_locked(MetaIo& io, bool& began) {
  // The failed state's stale mark: its two writes, then its sync. Not before the writes
  // of a round still being written have completed: a later write of block 0 or of its
  // table block must not land over the mark.
  if (stale_phase_ == StalePhase::kWritesToHand && (!writing_ || writing_->out == 0)) {
    Slot& slot = new_slot(Role::kStaleWrite);
    PersistCore::OwnedWrite& w = stale_writes_.back();
    slot.bytes = std::move(w.bytes);
    io = MetaIo{MetaIo::Kind::kWrite, slot.id, w.offset, slot.bytes};
    stale_writes_.pop_back();
    ++stale_out_;
    if (stale_writes_.empty()) stale_phase_ = StalePhase::kWritesOut;
    return true;
  }
  if (stale_phase_ == StalePhase::kSyncToHand) {
    Slot& slot = new_slot(Role::kStaleSync);
    io = MetaIo{MetaIo::Kind::kSync, slot.id, 0, {}};
    stale_phase_ = StalePhase::kSyncOut;
    return true;
  }
  if (flush_wanted_ && !flush_out_) {
    Slot& slot = new_slot(Role::kDataFlush);
    io = MetaIo{MetaIo::Kind::kDataFlush, slot.id, 0, {}};
    flush_wanted_ = false;
    flush_out_ = true;
    return true;
  }
  if (failing()) return false;
  return next_round_io(io, began);
}

bool ReactorCore::next_round_io(MetaIo& io, bool& began) {
  if (!writing_) {
    if (!core_.has_queued()) return false;
    // Open's rounds run one at a time: the superblock's round must not begin before the
    // recovered states are durable.
    if (!syncing_.empty() && (!pipelined_ || open_phase_ != OpenPhase::kReady)) return false;
    std::optional<PersistCore::Round> r = core_.begin_round();
    LLBM_CHECK(r.has_value(), "ReactorBitmap %p: a persist round is open outside the driver",
               static_cast<void*>(this));
    writing_.emplace(OpenRound{std::move(*r), next_round_++, 0, false, {}});
    began = true;
  }
  OpenRound& w = *writing_;
  if (w.error || w.sync_out) return false;
  if (!w.round.sync_planned()) {
    const PersistCore::Request r = core_.next_request(w.round);
    if (r.kind != PersistCore::Request::Kind::kSync) {
      Slot& slot = new_slot(Role::kRoundWrite);
      slot.round = w.number;
      slot.bytes.assign(r.bytes.begin(), r.bytes.end());
      io = MetaIo{MetaIo::Kind::kWrite, slot.id, r.offset, slot.bytes};
      ++w.out;
      return true;
    }
  }
  // The sync once every write of the round has completed, or, when the engine orders it
  // behind them (ordered_sync), right behind them in the call that handed them all out.
  if (w.out != 0 && !(ordered_sync_ && began)) return false;
  Slot& slot = new_slot(Role::kRoundSync);
  slot.round = w.number;
  io = MetaIo{MetaIo::Kind::kSync, slot.id, 0, {}};
  io.after_writes = w.out != 0;
  w.sync_out = true;
  if (w.out == 0) writes_done();
  return true;
}

void ReactorCore::writes_done() {
  core_.writes_done(writing_->round);
  syncing_.push_back(std::move(*writing_));
  writing_.reset();
}

void ReactorBitmap::complete(std::uint64_t id, std::error_code result) {
  ReactorCore& s = core_of(*this);
  LLBM_SYNC_POINT("reactor:complete");
  bool settle = false, retries = false;
  {
    detail::SpinLockGuard lock(s.io_lock_);
    ReactorCore::Slot* slot = nullptr;
    if (id != 0)
      for (ReactorCore::Slot& x : s.slots_)
        if (x.id == id) {
          slot = &x;
          break;
        }
    LLBM_CHECK(slot != nullptr,
               "ReactorBitmap %p: complete(%llu) of an IO that is not outstanding (never "
               "handed out by next_io, or completed already)",
               static_cast<void*>(this), static_cast<ull>(id));
    const ReactorCore::Role role = slot->role;
    const std::uint64_t number = slot->round;
    slot->id = 0;
    slot->bytes.clear();
    s.outstanding_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: a count for queries
    switch (role) {
      case ReactorCore::Role::kRoundWrite: {
        // Only the writing round has writes outstanding.
        ReactorCore::OpenRound& w = *s.writing_;
        --w.out;
        if (!result) s.blocks_written_.fetch_add(1, std::memory_order_relaxed);
        if (result && !w.error) w.error = result;
        if (w.out != 0) break;
        if (w.sync_out) {
          // An after_writes sync is out: its completion ends the round (with w.error if a
          // write failed).
          s.writes_done();
        } else if (s.end_unsyncable_round()) {
          settle = retries = true;
        }
        break;
      }
      case ReactorCore::Role::kRoundSync: {
        LLBM_CHECK(!s.writing_ || s.writing_->number != number,
                   "ReactorBitmap %p: complete(%llu) of a kSync while %zu kWrite(s) of its round "
                   "are outstanding (an after_writes sync starts only once they completed)",
                   static_cast<void*>(this), static_cast<ull>(id),
                   s.writing_ ? s.writing_->out : std::size_t{0});
        auto it =
            std::find_if(s.syncing_.begin(), s.syncing_.end(),
                         [number](const ReactorCore::OpenRound& r) { return r.number == number; });
        LLBM_CHECK(it != s.syncing_.end(), "ReactorBitmap %p: complete(%llu): its round is gone",
                   static_cast<void*>(this), static_cast<ull>(id));
        ReactorCore::OpenRound r = std::move(*it);
        s.syncing_.erase(it);
        const ReactorCore::OpenPhase phase = s.open_phase_;
        const std::error_code ec = r.error ? r.error : result;
        s.finish_round(std::move(r), ec);
        settle = true;
        retries = ec || phase != s.open_phase_;
        break;
      }
      case ReactorCore::Role::kStaleWrite:
        if (--s.stale_out_ == 0 && s.stale_phase_ == ReactorCore::StalePhase::kWritesOut)
          s.stale_phase_ = ReactorCore::StalePhase::kSyncToHand;
        break;
      case ReactorCore::Role::kStaleSync:
        s.stale_phase_ = ReactorCore::StalePhase::kDone;
        // release: pairs with failed()'s acquire load (the stale mark's IO is done).
        s.failure_final_.store(true, std::memory_order_release);
        break;
      case ReactorCore::Role::kDataFlush:
        s.flush_out_ = false;
        s.flush_done_ = true;
        s.flush_ec_ = result;
        s.data_flushes_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics only
        break;
    }
  }
  LLBM_SYNC_POINT("reactor:before_settle");
  if (settle) s.settle_persist_waiters();
  if (retries) s.release_retries();
}

bool ReactorCore::failing() const {
  // relaxed: io_lock_ orders the flag (fail() sets it under it).
  return (refused_.load(std::memory_order_relaxed) & kFailing) != 0;
}

bool ReactorCore::end_unsyncable_round() {
  if (!writing_ || writing_->out != 0 || writing_->sync_out) return false;
  if (!writing_->error && !failing()) return false;
  const std::error_code ec =
      writing_->error ? writing_->error : make_error_code(Errc::bitmap_failed);
  OpenRound r = std::move(*writing_);
  writing_.reset();
  finish_round(std::move(r), ec);
  return true;
}

void ReactorCore::finish_round(OpenRound r, std::error_code ec) {
  const bool was_failing = failing();
  // Once failed, a round publishes nothing, even if its sync succeeded: its waiters are
  // refused, and the stale mark says every chunk needs a resync.
  if (was_failing && !ec) ec = make_error_code(Errc::bitmap_failed);
  if (!core_.complete_round(std::move(r.round), ec)) {
    if (!was_failing) fail(ec);
    return;
  }
  rounds_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics only
  if (open_phase_ == OpenPhase::kStates) {
    // The recovered states are durable: only now may the superblock stop saying stale
    // or first-use and its events catch up with the engine's record (Bitmap::open's
    // second sync).
    {
      detail::SpinLockGuard lock(image_.superblock_lock());
      Superblock& sb = image_.superblock();
      sb.state &= ~(kSbStale | kSbWriteError | kSbFirstUse);
      sb.events = std::max(sb.events, min_events_) + 1;
      if (device_uuid_ != Uuid{}) sb.device_uuid = device_uuid_;
      image_.bump_block(image_.superblock_lock(), 0);
    }
    core_.enqueue(0);
    open_phase_ = OpenPhase::kSuperblock;
  } else if (open_phase_ == OpenPhase::kSuperblock) {
    open_phase_ = OpenPhase::kReady;
    // release: pairs with admit()'s acquire load (the open's states are durable).
    refused_.fetch_and(static_cast<std::uint8_t>(~kOpening), std::memory_order_release);
  }
}

void ReactorCore::fail(std::error_code ec) {
  failure_ = ec;
  std::fprintf(stderr, "llbitmap: a bitmap write or sync failed (%s); the bitmap is failed\n",
               ec.message().c_str());
  // release: pairs with the acquire loads of admit() and settle_persist_waiters().
  refused_.fetch_or(kFailing, std::memory_order_release);
  const auto marks = core_.stale_mark_requests();
  // Handed out from the back: the superblock's block first, then its table block.
  stale_writes_.assign(marks.rbegin(), marks.rend());
  stale_phase_ = StalePhase::kWritesToHand;
  // A round being written whose writes have all completed ends now: no sync is handed
  // out any more (one with writes outstanding ends as the last of them completes).
  end_unsyncable_round();
}

bool ReactorBitmap::io_outstanding() const noexcept {
  return core_of(*this).outstanding_.load(std::memory_order_relaxed) != 0;  // relaxed: a snapshot
}

}  // namespace llbitmap
