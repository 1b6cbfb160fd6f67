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
  // The failed state's stale mark: its two writes, then its sync.
  if (stale_phase_ == StalePhase::kWritesToHand) {
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
  // relaxed: io_lock_ orders the failed flag for the IO side (fail() sets it under it).
  if ((refused_.load(std::memory_order_relaxed) & kFailing) != 0) return false;
  return next_round_io(io, began);
}

bool ReactorCore::next_round_io(MetaIo& io, bool& began) {
  if (!round_) {
    if (!core_.has_queued()) return false;
    round_ = core_.begin_round();
    LLBM_CHECK(round_.has_value(), "ReactorBitmap %p: a persist round is open outside the driver",
               static_cast<void*>(this));
    round_out_ = 0;
    round_sync_next_ = false;
    round_sync_out_ = false;
    round_error_.clear();
    began = true;
  }
  if (round_error_ || round_sync_out_) return false;
  if (!round_sync_next_) {
    const PersistCore::Request r = core_.next_request(*round_);
    if (r.kind == PersistCore::Request::Kind::kSync) {
      round_sync_next_ = true;
    } else {
      Slot& slot = new_slot(Role::kRoundWrite);
      slot.bytes.assign(r.bytes.begin(), r.bytes.end());
      io = MetaIo{MetaIo::Kind::kWrite, slot.id, r.offset, slot.bytes};
      ++round_out_;
      return true;
    }
  }
  // The sync once every write of the round has completed, or, when the engine orders it
  // behind them (ordered_sync), right behind them in the call that handed them all out.
  if (round_out_ != 0 && !(ordered_sync_ && began)) return false;
  Slot& slot = new_slot(Role::kRoundSync);
  io = MetaIo{MetaIo::Kind::kSync, slot.id, 0, {}};
  io.after_writes = round_out_ != 0;
  round_sync_out_ = true;
  return true;
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
    slot->id = 0;
    slot->bytes.clear();
    s.outstanding_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: a count for queries
    switch (role) {
      case ReactorCore::Role::kRoundWrite:
        --s.round_out_;
        if (!result) s.blocks_written_.fetch_add(1, std::memory_order_relaxed);
        if (result && !s.round_error_) s.round_error_ = result;
        // A failed write ends its round once no write of it is outstanding, unless its
        // sync was handed out (after_writes): then the sync's completion ends it.
        if (s.round_error_ && s.round_out_ == 0 && !s.round_sync_out_) {
          s.finish_round(s.round_error_);
          settle = retries = true;
        }
        break;
      case ReactorCore::Role::kRoundSync: {
        LLBM_CHECK(s.round_out_ == 0,
                   "ReactorBitmap %p: complete(%llu) of a kSync while %zu kWrite(s) of its round "
                   "are outstanding (an after_writes sync starts only once they completed)",
                   static_cast<void*>(this), static_cast<ull>(id), s.round_out_);
        const ReactorCore::OpenPhase phase = s.open_phase_;
        const std::error_code ec = s.round_error_ ? s.round_error_ : result;
        s.finish_round(ec);
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

void ReactorCore::finish_round(std::error_code ec) {
  PersistCore::Round round = std::move(*round_);
  round_.reset();
  if (!core_.complete_round(std::move(round), ec)) {
    fail(ec ? ec : make_error_code(Errc::bitmap_failed));
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
}

bool ReactorBitmap::io_outstanding() const noexcept {
  return core_of(*this).outstanding_.load(std::memory_order_relaxed) != 0;  // relaxed: a snapshot
}

}  // namespace llbitmap
