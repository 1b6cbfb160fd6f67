// SPDX-License-Identifier: LGPL-2.1-or-later
//
// detail/mutex.h: Mutex, MutexLock and CondVar: std::mutex and std::condition_variable
// with the thread-safety annotations of detail/thread_annotations.h, so that a clang
// build with -Wthread-safety (preset clang-tsa) checks every LLBM_GUARDED_BY and
// LLBM_REQUIRES in the library. (libstdc++'s std::mutex is not a capability, so
// annotations that name one check nothing.)
//
// Layer 0. Mutex is a std::mutex; MutexLock holds one for a scope; CondVar waits with a
// Mutex held (the analysis knows the mutex is held again when wait returns). A function
// that must drop the lock in its middle calls mu.unlock() and mu.lock() itself and is
// annotated LLBM_REQUIRES(mu). Same blocking and memory-ordering behaviour as the
// standard types they wrap.
#pragma once

#include <llbitmap/detail/thread_annotations.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace llbitmap::detail {

class LLBM_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  ~Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() LLBM_ACQUIRE() { mu_.lock(); }
  void unlock() LLBM_RELEASE() { mu_.unlock(); }
  // Tells the analysis that the calling thread holds the mutex (not checked at run time).
  void assert_held() const LLBM_ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex from construction to the end of the scope.
class LLBM_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) LLBM_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() LLBM_RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

class CondVar {
 public:
  // Releases mu, waits for a notification (or a spurious wake-up), takes mu again.
  void wait(Mutex& mu) LLBM_REQUIRES(mu) {
    std::unique_lock<std::mutex> lk(mu.mu_, std::adopt_lock);
    cv_.wait(lk);
    lk.release();
  }
  // The same, for at most `timeout`. Returns false if it timed out.
  template <class Rep, class Period>
  bool wait_for(Mutex& mu, std::chrono::duration<Rep, Period> timeout) LLBM_REQUIRES(mu) {
    std::unique_lock<std::mutex> lk(mu.mu_, std::adopt_lock);
    const bool notified = cv_.wait_for(lk, timeout) == std::cv_status::no_timeout;
    lk.release();
    return notified;
  }
  template <class Clock, class Duration>
  bool wait_until(Mutex& mu, std::chrono::time_point<Clock, Duration> deadline) LLBM_REQUIRES(mu) {
    std::unique_lock<std::mutex> lk(mu.mu_, std::adopt_lock);
    const bool notified = cv_.wait_until(lk, deadline) == std::cv_status::no_timeout;
    lk.release();
    return notified;
  }
  void notify_one() noexcept { cv_.notify_one(); }
  void notify_all() noexcept { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace llbitmap::detail
