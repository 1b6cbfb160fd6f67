// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The reactor driver's cleaning pass as a step (reactor_core.h): pick, kill and drain
// the pages without waiting, ask for the data flush, clean, persist, resume; flush and
// close are forced passes.
#include <llbitmap/detail/check.h>
#include <llbitmap/reactor.h>

#include <algorithm>
#include <cstdio>

#include "image_ops.h"
#include "reactor_core.h"
#include "sync_point.h"

namespace llbitmap {

namespace {
using ull = unsigned long long;
// The drain allowance of a close, as Bitmap::close.
constexpr std::chrono::milliseconds kCloseAllowance{100};
}  // namespace

// ------------------------------------------------------------------ the cleaning pass

void ReactorBitmap::step() {
  step(core_of(*this).clock_->now());
}

void ReactorBitmap::step(Clock::time_point now) {
  ReactorCore& s = core_of(*this);
  if (!s.step_lock_.try_lock()) return;
  s.step_locked(now);
  s.step_lock_.unlock();
}

void ReactorCore::step_locked(Clock::time_point now) {
  // Each phase either waits for something (an IO, a grace period, a drain) or moves on;
  // a few turns let one call go from idle through a pass that needs no IO.
  for (int turn = 0; turn < 4; ++turn) {
    const Phase before = phase_;
    switch (phase_) {
      case Phase::kIdle:
        if (!start_pass(now)) return;
        break;
      case Phase::kSuspending:
        poll_suspends(now);
        break;
      case Phase::kFlushing: {
        std::error_code ec;
        {
          detail::SpinLockGuard lock(io_lock_);
          if (!flush_done_) return;
          flush_done_ = false;
          ec = flush_ec_;
        }
        if (ec && !pass_closing_) {
          end_pass(now, ec);  // the pages stay Dirty and expired: the next pass retries
        } else {
          if (ec) close_result_ = ec;
          clean_and_persist(!ec);
        }
        break;
      }
      case Phase::kPersisting:
        // acquire: pairs with fail()'s release store.
        if ((refused_.load(std::memory_order_acquire) & kFailing) != 0)
          end_pass(now, make_error_code(Errc::bitmap_failed));
        else if (targets_done())
          end_pass(now, close_result_);
        break;
    }
    if (phase_ == before) return;
  }
}

bool ReactorCore::start_pass(Clock::time_point now) {
  // relaxed: requests from any thread; what they ask for is read under step_lock_.
  const bool closing = close_requested_.load(std::memory_order_relaxed);
  const bool forced = !closing && flush_requested_.load(std::memory_order_relaxed);
  // relaxed: see Daemon (armed_ is re-checked with seq_cst at the end of every pass).
  const bool due =
      armed_.load(std::memory_order_relaxed) &&
      now >= last_pass_end_ + std::chrono::milliseconds(sleep_ms_.load(std::memory_order_relaxed));
  if (!closing && !forced && !due) return false;
  if (closing) close_requested_.store(false, std::memory_order_relaxed);
  if (forced) flush_requested_.store(false, std::memory_order_relaxed);
  // acquire: pairs with fail()'s release store.
  const std::uint8_t refused = refused_.load(std::memory_order_acquire);
  if ((refused & kClosed) != 0) {
    // Nothing runs on a closed bitmap; a flush asked for after the close is refused.
    if (forced) {
      detail::SpinLockGuard lock(result_lock_);
      flush_result_ = make_error_code(Errc::bitmap_closed);
      flushed_.store(true, std::memory_order_release);  // release: see end_pass
    }
    return false;
  }
  pass_closing_ = closing;
  pass_forced_ = forced;
  close_result_.clear();
  const bool cleanable =
      (refused & kFailing) == 0 && !degraded_.load(std::memory_order_relaxed);  // relaxed: a flag
  cand_.clear();
  // A close suspends every page; a pass, the cleanable ones that hold Dirty chunks and
  // are expired (or all of those, when forced).
  for (std::uint64_t p = 0; p < pages_.size(); ++p)
    if (closing || (cleanable && image_.page_has_dirty(p) && (forced || pages_[p]->expired(now))))
      cand_.push_back(p);
  if (cand_.empty()) {
    end_pass(now, forced && !cleanable && (refused & kFailing) != 0
                      ? make_error_code(Errc::bitmap_failed)
                      : std::error_code());
    return true;
  }
  std::vector<PageBarrier*> ptrs;
  ptrs.reserve(cand_.size());
  for (const std::uint64_t p : cand_) ptrs.push_back(pages_[p].get());
  PageBarrier::begin_suspend_many(ptrs);
  LLBM_SYNC_POINT("reactor:after_kill");
  cand_state_.assign(cand_.size(),
                     static_cast<std::uint8_t>(PageBarrier::SuspendPoll::kConfirming));
  phase_ = Phase::kSuspending;
  return true;
}

void ReactorCore::poll_suspends(Clock::time_point now) {
  using SP = PageBarrier::SuspendPoll;
  const std::chrono::milliseconds allowance =
      pass_closing_ ? kCloseAllowance
                    : std::chrono::milliseconds(sleep_ms_.load(std::memory_order_relaxed));
  bool waiting = false;
  for (std::size_t i = 0; i < cand_.size(); ++i) {
    const auto st = static_cast<SP>(cand_state_[i]);
    if (st == SP::kSuspended || st == SP::kReopened) continue;
    const SP next = pages_[cand_[i]]->poll_suspend(now, allowance);
    cand_state_[i] = static_cast<std::uint8_t>(next);
    if (next == SP::kConfirming || next == SP::kDraining) waiting = true;
    if (next == SP::kReopened && !pass_closing_) {
      suspend_timeouts_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics only
      if (!timeout_logged_[cand_[i]]) {
        timeout_logged_[cand_[i]] = true;
        std::fprintf(stderr,
                     "llbitmap: page %llu: a write outlived daemon_sleep (%lld ms); page left "
                     "dirty\n",
                     static_cast<ull>(cand_[i]), static_cast<long long>(allowance.count()));
      }
    }
  }
  if (waiting) return;
  std::size_t suspended = 0;
  for (const std::uint8_t st : cand_state_)
    if (static_cast<SP>(st) == SP::kSuspended) ++suspended;
  if (pass_closing_ && suspended != cand_.size()) {
    // A write is still in flight: nothing changed, the bitmap stays open.
    for (std::size_t i = 0; i < cand_.size(); ++i)
      if (static_cast<SP>(cand_state_[i]) == SP::kSuspended) reopen_page(cand_[i]);
    cand_.clear();
    release_retries();
    close_busy_.store(true, std::memory_order_relaxed);  // relaxed: see close_busy_
    pass_closing_ = false;
    phase_ = Phase::kIdle;
    // release: pairs with close_state()'s acquire load.
    close_state_.store(static_cast<std::uint8_t>(CloseState::kOpen), std::memory_order_release);
    return;
  }
  if (suspended == 0) {
    end_pass(now, {});
    return;
  }
  passes_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics only
  // acquire: pairs with fail()'s release store; relaxed degraded_: a flag.
  const bool cleanable = (refused_.load(std::memory_order_acquire) & kFailing) == 0 &&
                         !degraded_.load(std::memory_order_relaxed);
  if (cleanable && data_flush_) {
    // Clean may reach the disk only after the data it covers (docs/design.md#s1).
    detail::SpinLockGuard lock(io_lock_);
    flush_wanted_ = true;
    flush_done_ = false;
    phase_ = Phase::kFlushing;
    return;
  }
  clean_and_persist(cleanable);
}

void ReactorCore::clean_and_persist(bool clean) {
  using SP = PageBarrier::SuspendPoll;
  LLBM_SYNC_POINT("reactor:before_clean");
  targets_.clear();
  if (clean) {
    const TransitionContext ctx = context();
    for (std::size_t i = 0; i < cand_.size(); ++i)
      if (static_cast<SP>(cand_state_[i]) == SP::kSuspended)
        image_ops::clean_page(image_, cand_[i], ctx, targets_,
                              [this](std::uint64_t block) { core_.enqueue(block); });
  }
  // acquire: pairs with fail()'s release store.
  if (pass_closing_ && (refused_.load(std::memory_order_acquire) & kFailing) == 0) {
    {
      detail::SpinLockGuard lock(image_.superblock_lock());
      image_.superblock().events += 1;
      image_.bump_block(image_.superblock_lock(), 0);
    }
    core_.enqueue(0);
    targets_.push_back(Target{0, image_.dirty_seq(0)});
  }
  phase_ = Phase::kPersisting;
}

bool ReactorCore::targets_done() const noexcept {
  for (const Target& t : targets_)
    if (image_.durable_seq(t.block) < t.seq) return false;
  return true;
}

void ReactorCore::reopen_page(std::uint64_t page) noexcept {
  // relaxed: as Daemon::reopen_page (an end_sync this load misses calls expire_now after
  // it, which the resume keeps).
  if (image_.page_has_dirty(page))
    pages_[page]->resume_expired();
  else
    pages_[page]->resume();
}

void ReactorCore::end_pass(Clock::time_point now, std::error_code ec) {
  using SP = PageBarrier::SuspendPoll;
  if (pass_closing_) {
    // Closed for good (any result but busy): refuse first, then reopen the pages, so a
    // write parked on one is retried and refused (as Bitmap's finish_close).
    close_result_ = ec;
    // release: pairs with admit()'s acquire loads.
    refused_.fetch_or(kClosed, std::memory_order_release);
  }
  LLBM_SYNC_POINT("reactor:before_resume");
  std::size_t cleaned = 0;
  for (std::size_t i = 0; i < cand_.size(); ++i) {
    if (static_cast<SP>(cand_state_[i]) != SP::kSuspended) continue;
    reopen_page(cand_[i]);
    ++cleaned;
  }
  cand_.clear();
  if (cleaned != 0 && !pass_closing_)
    pages_cleaned_.fetch_add(cleaned, std::memory_order_relaxed);  // relaxed: statistics only
  release_retries();
  // Re-arm only while Dirty chunks remain: clear first, then count, all seq_cst (the
  // other half is in change_chunk), as Daemon::pass.
  armed_.store(false, std::memory_order_seq_cst);
  if (image_.any_page_dirty()) armed_.store(true, std::memory_order_seq_cst);
  last_pass_end_ = now;
  phase_ = Phase::kIdle;
  if (pass_forced_) {
    detail::SpinLockGuard lock(result_lock_);
    flush_result_ = ec;
    // release: pairs with flushed()'s acquire load.
    flushed_.store(true, std::memory_order_release);
    pass_forced_ = false;
  }
  if (pass_closing_) {
    pass_closing_ = false;
    // release: pairs with close_state()'s acquire load.
    close_state_.store(static_cast<std::uint8_t>(CloseState::kClosed), std::memory_order_release);
  }
}

void ReactorBitmap::begin_flush() {
  ReactorCore& s = core_of(*this);
  // relaxed: flushed_ is re-published (release) by the pass that serves this request.
  s.flushed_.store(false, std::memory_order_relaxed);
  s.flush_requested_.store(true, std::memory_order_relaxed);
}

bool ReactorBitmap::flushed() const noexcept {
  return core_of(*this).flushed_.load(std::memory_order_acquire);  // see end_pass
}

std::error_code ReactorBitmap::flush_result() const {
  const ReactorCore& s = core_of(*this);
  detail::SpinLockGuard lock(s.result_lock_);
  // acquire: see end_pass.
  return s.flushed_.load(std::memory_order_acquire) ? s.flush_result_ : std::error_code();
}

void ReactorBitmap::begin_close() {
  ReactorCore& s = core_of(*this);
  // acquire: see end_pass.
  if (s.close_state_.load(std::memory_order_acquire) ==
      static_cast<std::uint8_t>(CloseState::kClosed))
    return;
  s.close_busy_.store(false, std::memory_order_relaxed);  // relaxed: see close_busy_
  s.close_state_.store(static_cast<std::uint8_t>(CloseState::kClosing), std::memory_order_relaxed);
  s.close_requested_.store(true, std::memory_order_relaxed);  // relaxed: see start_pass
}

ReactorBitmap::CloseState ReactorBitmap::close_state(std::error_code& result) const {
  const ReactorCore& s = core_of(*this);
  // acquire: pairs with end_pass's and poll_suspends's release stores.
  const auto st = static_cast<CloseState>(s.close_state_.load(std::memory_order_acquire));
  result = st == CloseState::kClosed ? s.close_result_ : std::error_code();
  if (st == CloseState::kOpen && s.close_busy_.load(std::memory_order_relaxed))
    result = make_error_code(Errc::busy);
  return st;
}

}  // namespace llbitmap
