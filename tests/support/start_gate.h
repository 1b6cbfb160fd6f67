// SPDX-License-Identifier: LGPL-2.1-or-later
//
// start_gate.h: test helpers that force interleavings without sleeping.
//
// StartGate: N threads arrive and block until the test opens the gate, so they all
// start their racing loop together. Flag: a one-shot event one thread waits for and
// another sets ("A has reached point X").
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace llbitmap::test {

class Flag {
 public:
  void set() {
    {
      std::lock_guard lk(mu_);
      set_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [this] { return set_; });
  }
  // For watchdogs only: a bound that turns a hang into a failure, never an ordering tool.
  bool wait_for(std::chrono::milliseconds d) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, d, [this] { return set_; });
  }
  bool is_set() {
    std::lock_guard lk(mu_);
    return set_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

class StartGate {
 public:
  explicit StartGate(int n) : expected_(n) {}
  // Called by each racing thread.
  void arrive_and_wait() {
    std::unique_lock lk(mu_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lk, [this] { return open_; });
  }
  // Called by the test: waits until every thread arrived, then lets them all go.
  void open_when_ready() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [this] { return arrived_ == expected_; });
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int expected_;
  int arrived_ = 0;
  bool open_ = false;
};

// Spins (yielding) until pred() is true: for waiting on a state another thread is
// known to reach (e.g. "a writer is blocked in raise()"), never for timing.
template <class Pred>
void spin_until(Pred pred) {
  while (!pred()) std::this_thread::yield();
}

}  // namespace llbitmap::test
