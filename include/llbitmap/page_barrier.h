// SPDX-License-Identifier: LGPL-2.1-or-later
//
// page_barrier.h: PageBarrier, the per-page barrier of md-llbitmap
// (llbitmap_raise_barrier / llbitmap_release_barrier / llbitmap_suspend_timeout /
// llbitmap_resume): a PercpuRef, a WaitQueue and an expire time.
//
// Layer 2. Any number of writer threads enter a page (raise) and leave it (release)
// at the cost of one per-thread counter update; one maintenance thread (the daemon)
// drains and excludes them (suspend) and lets them back in (resume).
//
//   |           | raise()           | try_raise() | release()    | suspend(t), begin_* | resume() |
//   |-----------|-------------------|-------------|--------------|---------------------|----------|
//   | open      | open (+1)         | open (+1)   | open (-1)    | draining            | invalid  |
//   | draining  | blocks until open | false       | draining(-1) | invalid             | invalid  |
//   | suspended | blocks until open | false       | invalid      | invalid             | open     |
//
// suspend(t) kills the ref and waits until every holder has released. If that takes
// longer than t (counted from the end of the kill's grace period, so that a slow grace
// period is not mistaken for a write in flight) it resurrects the ref, wakes the writers that
// queued meanwhile and returns false: the page is open again and its Dirty bits stay (upstream
// fixed the missing resurrect in d119bd2e1643 but still misses the wake-up; both are done here).
//
// Non-blocking suspend (begin_suspend_many + poll_suspend, for a reactor's cleaning step
// that must never sleep): the same steps, split at every wait. begin_suspend_many (begin_*
// in the table) is the kill half of suspend_many; each poll_suspend then checks, without
// waiting, what suspend(t) would wait for and answers with the page's step:
//
//   | poll_suspend() finds                              | returns     | the page is |
//   |---------------------------------------------------|-------------|-------------|
//   | kill not confirmed, or the switch thread not done | kConfirming | draining    |
//   | confirmed, holders remain, allowance left         | kDraining   | draining    |
//   | confirmed, no holder                              | kSuspended  | suspended   |
//   | confirmed, holders remain, allowance over         | kReopened   | open        |
//
// The allowance starts at the first poll that finds the kill confirmed and is measured on
// the caller's `now`. kReopened does what a timed-out suspend(t) does (resurrect and wake).
// Neither call sleeps, waits for a condition (the grace period, a holder, a switch) or does
// IO. They do take short internal locks that nobody keeps across a wait, so at worst they
// wait out another thread's short critical section: the switch lock and the switch
// thread's queue lock in the kill, the switch lock and the counter registry's lock in the
// resurrect of kReopened. The first kill in the process starts the switch thread.
//
// Expire: a page is idle once no raise has happened for barrier_idle. raise() makes no
// clock call: it reads the clock's coarse word and stores `coarse + barrier_idle` only
// when that value differs from the stored one, on a cache line of its own (the kernel
// stores on every raise into the line every raise reads, which costs 2-5x at two
// threads). The idle time is honoured to within the clock subscription's resolution,
// max(1 ms, barrier_idle / 8). After resume() the page never expires until the next
// raise. expire_now() makes it expired at once (end_sync, close_sync); one made while the
// page is suspended survives the resume(). resume_expired() reopens the page expired (its
// owner still has work on it).
//
// Multi-page raise: a suspend_many() kills all its pages before it waits for any, so a
// thread that holds one page and waits in raise() for another that the same call killed
// waits for a drain that waits for it. A caller that raises several pages uses raise() for
// the first only and try_raise(), which never waits, for the others (docs/design.md#page-barrier).
//
// Threads: raise/release from any thread, a get on one and the release on another is
// fine. suspend/suspend_many/begin_suspend_many/poll_suspend/resume from one maintenance
// thread at a time (it owns the non-blocking suspend's per-page step and allowance end).
// set_barrier_idle, barrier_idle, expire_now and stats from any thread, concurrently
// too (concurrent set_barrier_idle calls are serialised; the last one wins, for the idle
// time and the clock subscription alike). raise() blocks while the page is draining or
// suspended; suspend blocks up to its timeout; release(), resume(), expired(),
// begin_suspend_many() and poll_suspend() never block (see above for their short locks).
//
// Memory ordering: everything a writer did before release() happens-before the return
// of a suspend() that drained the page (or of the poll_suspend() that returns kSuspended);
// everything the suspender did before resume() happens-before the return of any raise()
// that had to wait for it.
//
// Lifetime: the barrier must outlive every thread inside raise() or holding a raise.
#pragma once

#include <llbitmap/clock.h>
#include <llbitmap/detail/thread_annotations.h>
#include <llbitmap/percpu_ref.h>
#include <llbitmap/wait_queue.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace llbitmap {

namespace detail {
struct PageBarrierFast;                // raise/release inlined into the write path (src/sync/)
class LLBM_CAPABILITY("mutex") Mutex;  // detail/mutex.h
// Serialises set_barrier_idle() over every PageBarrier (a rare call: one process-wide
// lock instead of a mutex in each page). src/sync/page_barrier.cc.
Mutex& barrier_idle_lock() noexcept;
}  // namespace detail

class PageBarrier {
 public:
  explicit PageBarrier(Clock& clock = Clock::system(),
                       std::chrono::milliseconds barrier_idle = std::chrono::milliseconds(5000));
  // Requires: no raise held (only the initial reference), no suspend in progress.
  ~PageBarrier();

  PageBarrier(const PageBarrier&) = delete;
  PageBarrier& operator=(const PageBarrier&) = delete;

  // Enters the page; waits while it is draining or suspended.
  void raise() noexcept;
  // Leaves the page. Requires: a matching raise().
  void release() noexcept;
  // Enters the page if it is open and returns true; returns false without waiting (and
  // without entering) while it is draining or suspended. Release a true with release().
  [[nodiscard]] bool try_raise() noexcept;
  // Kills, then waits up to `timeout` for every holder to leave. true: the page is
  // suspended (call resume() later). false: timed out, the page is open again.
  // Requires: the page is open.
  [[nodiscard]] bool suspend(std::chrono::milliseconds timeout);
  // Reopens a suspended page and wakes its waiters. Requires: suspend() returned true.
  void resume() noexcept;
  // As resume(), but the page stays expired (until the next raise), as after expire_now().
  void resume_expired() noexcept;
  // True once no raise happened for barrier_idle before `now`.
  [[nodiscard]] bool expired(Clock::time_point now) const noexcept;

  // Suspends every page in `pages` with one grace period for all of them (kill all,
  // then wait for each). suspended[i] says which ones succeeded; the others are open
  // again. Returns the number suspended. Requires: suspended.size() == pages.size().
  static std::size_t suspend_many(std::span<PageBarrier* const> pages,
                                  std::chrono::milliseconds timeout, std::span<bool> suspended);

  // Non-blocking suspend (the reactor's cleaning step, reactor.h). begin_suspend_many
  // kills every page in `pages` with one grace period, as suspend_many does, and returns
  // without waiting for the grace period or the holders. poll_suspend then reports
  // without waiting:
  enum class SuspendPoll : std::uint8_t {
    kConfirming,  // the kill's grace period has not ended yet
    kDraining,    // holders remain; the allowance runs
    kSuspended,   // drained: the page is suspended (resume() or resume_expired() later)
    kReopened,    // the allowance ran out: the page was resurrected, is open again, and
                  // its waiters were woken (as a timed-out suspend())
  };
  // Requires: every page is open and not in a suspend (poll each earlier one to its end).
  // Takes short locks only (header comment); never sleeps.
  static void begin_suspend_many(std::span<PageBarrier* const> pages);
  // `now` on any steady time base the caller uses consistently (the reactor passes its
  // Clock's time). The allowance `timeout` starts at the first poll that finds the kill
  // confirmed (as suspend_many's starts after the grace period). Once it returned
  // kSuspended or kReopened, polling again is misuse (LLBM_CHECK abort with a message).
  // Requires: a begin_suspend_many() of this page, from the same maintenance thread.
  SuspendPoll poll_suspend(Clock::time_point now, std::chrono::milliseconds timeout) noexcept;

  // Makes the page count as expired from now on (until the next raise). Called while the
  // page is suspended (after suspend_many() or begin_suspend_many() started on it), it
  // also outlives the resume().
  void expire_now() noexcept;
  void set_barrier_idle(std::chrono::milliseconds idle);
  [[nodiscard]] std::chrono::milliseconds barrier_idle() const noexcept;
  [[nodiscard]] bool is_suspended() const noexcept { return active_.is_dying(); }

  // Counters for tests, torture and the demo (relaxed, never on the fast path).
  struct Stats {
    std::uint64_t raise_waits;       // raises that met a draining or suspended page
    std::uint64_t suspends;          // suspends that succeeded
    std::uint64_t suspend_waits;     // suspends that had to wait for a holder
    std::uint64_t suspend_timeouts;  // suspends that timed out and reopened the page
  };
  [[nodiscard]] Stats stats() const noexcept;

 private:
  friend struct detail::PageBarrierFast;
  static constexpr Clock::rep kNever = INT64_MAX;

  void raise_slow() noexcept;
  void note_used() noexcept {
    // Check-then-store (see the header comment). relaxed: expiry is a hint; suspend()
    // drains holders before anything is cleaned, whatever the expire word says.
    const Clock::rep want =
        clock_.coarse_now().time_since_epoch().count() + idle_ns_.load(std::memory_order_relaxed);
    if (expire_.load(std::memory_order_relaxed) != want)
      expire_.store(want, std::memory_order_relaxed);
  }
  // Where a non-blocking suspend of this page stands (kIdle: none in progress).
  enum class AsyncStep : std::uint8_t { kIdle, kConfirming, kDraining };

  static void kill_all(std::span<PageBarrier* const> pages);
  bool finish_suspend(std::chrono::steady_clock::time_point deadline);
  void give_up() noexcept;
  void reopen(Clock::rep expire) noexcept;

  Clock& clock_;
  Clock::Subscription tick_ LLBM_GUARDED_BY(detail::barrier_idle_lock());
  // Declared before active_ so that it is destroyed after it: a release callback still
  // running on another thread finishes before the queue goes away.
  WaitQueue wait_;
  PercpuRef active_;
  // The expire word and the idle time: own cache line, written about once per tick.
  alignas(detail::kCacheLine) std::atomic<Clock::rep> expire_{kNever};
  std::atomic<Clock::rep> idle_ns_;
  // Slow-path counters.
  alignas(detail::kCacheLine) std::atomic<std::uint64_t> raise_waits_{0};
  std::atomic<std::uint64_t> suspends_{0};
  std::atomic<std::uint64_t> suspend_waits_{0};
  std::atomic<std::uint64_t> suspend_timeouts_{0};
  std::atomic<bool> switched_{false};  // the kill of the current suspend is confirmed
  // An expire_now() not yet consumed by a suspend: suspend_many() clears it before the
  // kill, resume() keeps the page expired if it was set again meanwhile.
  std::atomic<bool> expire_requested_{false};
  // The non-blocking suspend's step and the end of its allowance: maintenance thread only
  // (begin_suspend_many, poll_suspend; no lock, never read by another thread).
  AsyncStep async_step_ = AsyncStep::kIdle;
  Clock::time_point allowance_end_{};
};

}  // namespace llbitmap
