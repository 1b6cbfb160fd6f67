// SPDX-License-Identifier: LGPL-2.1-or-later
#include <llbitmap/detail/check.h>
#include <llbitmap/detail/mutex.h>
#include <llbitmap/page_barrier.h>

#include <algorithm>
#include <new>
#include <utility>

#include "page_barrier_fast.h"
#include "switch_worker.h"
#include "sync_point.h"
#include <pthread.h>

namespace llbitmap {

namespace {

Clock::duration tick_resolution(std::chrono::milliseconds idle) {
  return std::max<Clock::duration>(std::chrono::milliseconds(1), idle / 8);
}

// The lock of set_barrier_idle (detail::barrier_idle_lock()). It is held only while an
// idle time and a subscription handle are stored, never across a clock call or another
// lock. Constant-initialised (std::mutex has a constexpr constructor), so the fork handlers can
// use it without a function-local static's guard.
constinit detail::Mutex idle_lock;

// Holds the lock across fork so that the child never inherits it held. Registered by the
// first set_barrier_idle, before it first takes the lock.
void register_idle_lock_fork_handlers() {
  static const int registered =
      ::pthread_atfork([]() LLBM_NO_THREAD_SAFETY_ANALYSIS { idle_lock.lock(); },
                       []() LLBM_NO_THREAD_SAFETY_ANALYSIS { idle_lock.unlock(); },
                       [] { new (&idle_lock) detail::Mutex; });
  (void)registered;
}

}  // namespace

detail::Mutex& detail::barrier_idle_lock() noexcept {
  return idle_lock;
}

PageBarrier::PageBarrier(Clock& clock, std::chrono::milliseconds barrier_idle)
    : clock_(clock),
      tick_(clock.subscribe(tick_resolution(barrier_idle))),
      // active_release: wake whoever waits for the page to drain.
      active_([this] { wait_.wake_up(); }, RefFlags::kAllowReinit),
      idle_ns_(std::chrono::duration_cast<Clock::duration>(barrier_idle).count()) {}

PageBarrier::~PageBarrier() {
  LLBM_CHECK(!active_.is_dying() || active_.is_zero(),
             "PageBarrier %p: destroyed while a suspend is draining it", static_cast<void*>(this));
  LLBM_CHECK(wait_.waiters() == 0, "PageBarrier %p: destroyed with %u writers waiting in raise()",
             static_cast<void*>(this), wait_.waiters());
}

void PageBarrier::raise() noexcept {
  detail::PageBarrierFast::raise(*this);
}

void PageBarrier::raise_slow() noexcept {
  // The fast path did not apply: this thread has no counter for the page yet (or is
  // exiting), or the page is draining or suspended.
  if (active_.tryget_live()) {
    note_used();
    return;
  }
  raise_waits_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics only
  LLBM_SYNC_POINT("barrier:raise_wait");
  for (;;) {
    wait_.wait([this] { return !active_.is_dying(); });
    if (active_.tryget_live()) {
      note_used();
      return;
    }
  }
}

void PageBarrier::release() noexcept {
  detail::PageBarrierFast::release(*this);
}

bool PageBarrier::try_raise() noexcept {
  if (detail::PageBarrierFast::try_raise(*this)) return true;
  // The fast path did not apply: a first use by this thread, or the page is draining or
  // suspended (tryget_live() fails, and nothing was taken).
  if (active_.tryget_live()) {
    note_used();
    return true;
  }
  raise_waits_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

bool PageBarrier::finish_suspend(std::chrono::steady_clock::time_point deadline) {
  // The counters here are relaxed: statistics only.
  if (!active_.is_zero()) suspend_waits_.fetch_add(1, std::memory_order_relaxed);
  const auto left = deadline - std::chrono::steady_clock::now();
  if (wait_.wait_for([this] { return active_.is_zero(); },
                     std::max(left, std::chrono::steady_clock::duration::zero()))) {
    suspends_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  give_up();
  return false;
}

// A holder outlived the timeout: reopen the page (upstream d119bd2e1643) and wake the
// writers that queued on it meanwhile (upstream still misses this wake-up). Never waits:
// the kill's switch is done (suspend_many and poll_suspend both saw it), so resurrect()
// finds no switch pending.
void PageBarrier::give_up() noexcept {
  active_.resurrect();
  wait_.wake_up();
  suspend_timeouts_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics only
}

bool PageBarrier::suspend(std::chrono::milliseconds timeout) {
  PageBarrier* self = this;
  bool ok = false;
  suspend_many(std::span<PageBarrier* const>(&self, 1), timeout, std::span<bool>(&ok, 1));
  return ok;
}

// The kill half of suspend_many and begin_suspend_many. Waits for nothing: kill_and_confirm
// takes the switch lock and the switch thread's queue lock briefly, and never finds a switch
// of the page pending (the previous suspend of an open page saw its switch done).
void PageBarrier::kill_all(std::span<PageBarrier* const> pages) {
  {
    detail::SwitchBatch batch;  // one grace period for every kill below
    for (PageBarrier* p : pages) {
      LLBM_CHECK(!p->active_.is_dying(), "PageBarrier %p: suspend() of a page already suspended",
                 static_cast<void*>(p));
      // relaxed: read next by this thread; the confirmation's store below runs after it
      // (kill_and_confirm hands the confirmation over under the switch lock).
      p->switched_.store(false, std::memory_order_relaxed);
      // The expire_now() calls made so far are served by this suspend: what the caller made
      // Dirty before them is seen by the owner's cleaning. seq_cst: an exchange that reads
      // an expire_now()'s store synchronises with it (its chunk change happens before the
      // cleaning); one that does not is ordered before that store, which resume()'s
      // exchange then sees (see reopen()).
      (void)p->expire_requested_.exchange(false, std::memory_order_seq_cst);
      // The confirmation runs once the ref is in atomic mode (after the grace period).
      p->active_.kill_and_confirm([p] {
        // release: pairs with the acquire loads in suspend_many and poll_suspend.
        p->switched_.store(true, std::memory_order_release);
        p->wait_.wake_up();
      });
    }
  }
}

std::size_t PageBarrier::suspend_many(std::span<PageBarrier* const> pages,
                                      std::chrono::milliseconds timeout,
                                      std::span<bool> suspended) {
  LLBM_CHECK(pages.size() == suspended.size(),
             "PageBarrier::suspend_many: %zu pages but %zu result slots", pages.size(),
             suspended.size());
  kill_all(pages);
  LLBM_SYNC_POINT("barrier:after_kill");
  // The timeout is the holders' allowance: it starts once the grace period is over, so a
  // slow grace period is never mistaken for a write in flight.
  // Last page first: the switch thread confirms kills in the order they were queued, so
  // once the last one is confirmed the others are too, and the pass sleeps once instead
  // of once per page in lockstep with the switch thread.
  for (std::size_t i = pages.size(); i-- > 0;) {
    PageBarrier* p = pages[i];
    // acquire: pairs with the confirmation's release store of switched_ above.
    p->wait_.wait([p] { return p->switched_.load(std::memory_order_acquire); });
  }
  // The switch thread confirms a kill before it drops its own reference to the ref: wait
  // for that drop too, so that an idle page is never given up because the switch
  // thread was preempted between the two steps.
  for (PageBarrier* p : pages) detail::PercpuRefFast::wait_switch_done(p->active_);
  LLBM_SYNC_POINT("barrier:allowance_starts");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t n = 0;
  for (std::size_t i = 0; i < pages.size(); ++i) {
    suspended[i] = pages[i]->finish_suspend(deadline);
    n += suspended[i] ? 1 : 0;
  }
  return n;
}

void PageBarrier::begin_suspend_many(std::span<PageBarrier* const> pages) {
  for (PageBarrier* p : pages) {
    LLBM_CHECK(p->async_step_ == AsyncStep::kIdle,
               "PageBarrier %p: begin_suspend_many() of a page whose non-blocking suspend is "
               "still in progress (poll it to kSuspended or kReopened first)",
               static_cast<void*>(p));
  }
  kill_all(pages);  // checks that every page is open
  for (PageBarrier* p : pages) p->async_step_ = AsyncStep::kConfirming;
}

PageBarrier::SuspendPoll PageBarrier::poll_suspend(Clock::time_point now,
                                                   std::chrono::milliseconds timeout) noexcept {
  LLBM_CHECK(async_step_ != AsyncStep::kIdle,
             "PageBarrier %p: poll_suspend() without a non-blocking suspend in progress "
             "(no begin_suspend_many(), or a poll already returned kSuspended or kReopened)",
             static_cast<void*>(this));
  // The counters here are relaxed: statistics only.
  if (async_step_ == AsyncStep::kConfirming) {
    // acquire: pairs with the confirmation's release store of switched_ (kill_all). Then,
    // as suspend_many does, the switch thread's own reference must be gone too, so that an
    // idle page is never given up because the switch thread was preempted between the two.
    if (!switched_.load(std::memory_order_acquire) || !detail::PercpuRefFast::switch_done(active_))
      return SuspendPoll::kConfirming;
    async_step_ = AsyncStep::kDraining;
    allowance_end_ = now + timeout;
    if (!active_.is_zero()) suspend_waits_.fetch_add(1, std::memory_order_relaxed);
  }
  // As finish_suspend: a page that drained by the end of the allowance is suspended.
  if (active_.is_zero()) {
    async_step_ = AsyncStep::kIdle;
    suspends_.fetch_add(1, std::memory_order_relaxed);
    return SuspendPoll::kSuspended;
  }
  if (now < allowance_end_) return SuspendPoll::kDraining;
  async_step_ = AsyncStep::kIdle;
  give_up();
  return SuspendPoll::kReopened;
}

void PageBarrier::resume() noexcept {
  reopen(kNever);
}

void PageBarrier::resume_expired() noexcept {
  reopen(INT64_MIN);
}

// Sets the expire word before the page reopens (a writer's raise after that stores its
// own), keeping it expired if expire_now() ran while the page was suspended.
void PageBarrier::reopen(Clock::rep expire) noexcept {
  LLBM_CHECK(active_.is_dying(), "PageBarrier %p: resume() of a page that is not suspended",
             static_cast<void*>(this));
  // seq_cst, all four: this store, this exchange, and expire_now()'s flag store and expire
  // store (in that order) are in one total order. If the exchange reads false, expire_now()'s
  // flag store comes after it, so its expire store comes after this one: the page ends
  // expired either way.
  expire_.store(expire, std::memory_order_seq_cst);
  if (expire_requested_.exchange(false, std::memory_order_seq_cst))
    expire_.store(INT64_MIN, std::memory_order_seq_cst);
  active_.resurrect();
  wait_.wake_up();
}

bool PageBarrier::expired(Clock::time_point now) const noexcept {
  // relaxed: expiry is a hint (see note_used); suspend() decides, not this.
  return now.time_since_epoch().count() >= expire_.load(std::memory_order_relaxed);
}

void PageBarrier::expire_now() noexcept {
  // seq_cst, flag first: pairs with reopen() and with suspend_many()'s exchange (see there).
  expire_requested_.store(true, std::memory_order_seq_cst);
  expire_.store(INT64_MIN, std::memory_order_seq_cst);
}

void PageBarrier::set_barrier_idle(std::chrono::milliseconds idle) {
  // Keep the coarse word fine enough for the new idle time. Subscribe first and release
  // the old subscription last, both outside the lock: under it only the idle time and the
  // subscription handle change, together, so that concurrent callers (Bitmap's setter
  // may run on any thread) never replace tick_ at once and the last caller's idle time
  // is the one whose resolution stays subscribed.
  register_idle_lock_fork_handlers();
  Clock::Subscription fresh = clock_.subscribe(tick_resolution(idle));
  Clock::Subscription old;
  {
    detail::MutexLock lk(detail::barrier_idle_lock());
    // relaxed: the idle time is a hint read by note_used() (see there); the lock orders
    // concurrent setters.
    idle_ns_.store(std::chrono::duration_cast<Clock::duration>(idle).count(),
                   std::memory_order_relaxed);
    old = std::move(tick_);
    tick_ = std::move(fresh);
  }
}

std::chrono::milliseconds PageBarrier::barrier_idle() const noexcept {
  // relaxed: a value only; set_barrier_idle's lock orders the setters.
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      Clock::duration(idle_ns_.load(std::memory_order_relaxed)));
}

PageBarrier::Stats PageBarrier::stats() const noexcept {
  // relaxed: statistics only.
  return Stats{raise_waits_.load(std::memory_order_relaxed),
               suspends_.load(std::memory_order_relaxed),
               suspend_waits_.load(std::memory_order_relaxed),
               suspend_timeouts_.load(std::memory_order_relaxed)};
}

}  // namespace llbitmap
