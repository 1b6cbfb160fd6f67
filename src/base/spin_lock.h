// SPDX-License-Identifier: LGPL-2.1-or-later
//
// spin_lock.h: SpinLock, a test-and-test-and-set lock for critical sections of a few
// loads and stores that a reactor thread may enter (reactor.h: nothing there may sleep
// on a futex). Never held across IO, a wait or a call that may block.
//
// Layer 0, private. lock() spins with the CPU's pause hint; after a bounded number of
// spins (a holder that was preempted) it yields the CPU with sched_yield() between tries,
// which never sleeps on a futex or a timer. try_lock() never spins. Annotated like detail::Mutex,
// so the analysis checks the fields it guards.
#pragma once

#include <llbitmap/detail/thread_annotations.h>

#include <atomic>

#include <sched.h>

namespace llbitmap::detail {

class LLBM_CAPABILITY("mutex") SpinLock {
 public:
  SpinLock() = default;
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

  void lock() noexcept LLBM_ACQUIRE() {
    for (;;) {
      // acquire: pairs with unlock()'s release store, so the holder's writes are seen.
      if (!held_.exchange(true, std::memory_order_acquire)) return;
      // relaxed: only a hint to retry the exchange; the exchange orders.
      for (int spins = 0; held_.load(std::memory_order_relaxed); ++spins) {
        if (spins < kSpinsBeforeYield)
          pause();
        else
          sched_yield();
      }
    }
  }
  [[nodiscard]] bool try_lock() noexcept LLBM_TRY_ACQUIRE(true) {
    // relaxed load: a hint only; acquire exchange: as in lock().
    return !held_.load(std::memory_order_relaxed) &&
           !held_.exchange(true, std::memory_order_acquire);
  }
  // release: pairs with the acquire exchange of the next lock() or try_lock().
  void unlock() noexcept LLBM_RELEASE() { held_.store(false, std::memory_order_release); }
  // Tells the analysis that the calling thread holds the lock (not checked at run time).
  void assert_held() const LLBM_ASSERT_CAPABILITY(this) {}

 private:
  static constexpr int kSpinsBeforeYield = 1024;
  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
  }
  std::atomic<bool> held_{false};
};

class LLBM_SCOPED_CAPABILITY SpinLockGuard {
 public:
  explicit SpinLockGuard(SpinLock& l) noexcept LLBM_ACQUIRE(l) : l_(l) { l_.lock(); }
  ~SpinLockGuard() LLBM_RELEASE() { l_.unlock(); }
  SpinLockGuard(const SpinLockGuard&) = delete;
  SpinLockGuard& operator=(const SpinLockGuard&) = delete;

 private:
  SpinLock& l_;
};

}  // namespace llbitmap::detail
