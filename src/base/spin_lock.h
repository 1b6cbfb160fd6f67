// SPDX-License-Identifier: LGPL-2.1-or-later
//
// spin_lock.h: SpinLock, a test-and-test-and-set lock for critical sections of a few
// loads and stores that a reactor thread may enter (reactor.h: nothing there may sleep
// on a futex). Never held across IO, a wait or a call that may block.
//
// Layer 0, private. lock() spins with the CPU's pause hint and never makes a system
// call; try_lock() never spins. Annotated like detail::Mutex, so the analysis checks the
// fields it guards.
#pragma once

#include <llbitmap/detail/thread_annotations.h>

#include <atomic>

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
      while (held_.load(std::memory_order_relaxed)) pause();
    }
  }
  [[nodiscard]] bool try_lock() noexcept LLBM_TRY_ACQUIRE(true) {
    // relaxed load: a hint only; acquire exchange: as in lock().
    return !held_.load(std::memory_order_relaxed) &&
           !held_.exchange(true, std::memory_order_acquire);
  }
  // release: pairs with the acquire exchange of the next lock() or try_lock().
  void unlock() noexcept LLBM_RELEASE() { held_.store(false, std::memory_order_release); }

 private:
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
