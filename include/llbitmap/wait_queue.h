// SPDX-License-Identifier: LGPL-2.1-or-later
//
// wait_queue.h: WaitQueue, the kernel's wait_queue_head_t with wait_event /
// wait_event_timeout / wake_up_all semantics, on a futex.
//
// Layer 1. A waiter sleeps until a predicate it supplies becomes true; whoever makes
// the predicate true calls wake_up() afterwards, which wakes every waiter (each
// re-checks its predicate and sleeps again if it is still false).
//
// No lost wake-ups: if the predicate's state is changed (by any store, of any memory
// order) before wake_up() is called, every waiter either sees the new state when it
// checks the predicate or is woken. The argument: a waiter announces itself with a
// seq_cst read-modify-write on the waiter count before its last check; wake_up() reads
// that count with a read-modify-write too, so the two RMWs are ordered, and whichever
// comes second sees the other's side (the RMW chain gives the happens-before).
//
// wake_up() with nobody waiting is one uncontended atomic RMW and no system call.
// Any thread may wait or wake; wait() blocks, wake_up() never does. Predicates are
// called on the waiting thread, possibly several times, and must not block.
// The queue must outlive every thread inside wait(), wait_for() or wake_up().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace llbitmap {

namespace detail {
// Sleeps while *word == expected, at most `timeout_ns` (< 0: no limit). May return
// early (spuriously, or when woken).
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::int64_t timeout_ns) noexcept;
void futex_wake_all(std::atomic<std::uint32_t>* word) noexcept;
}  // namespace detail

class WaitQueue {
 public:
  WaitQueue() = default;
  ~WaitQueue() = default;
  WaitQueue(const WaitQueue&) = delete;
  WaitQueue& operator=(const WaitQueue&) = delete;

  // wait_event: returns once pred() is true.
  template <class Pred>
  void wait(Pred pred) {
    while (!pred()) {
      const std::uint32_t seq = announce();
      if (pred()) {
        retire();
        return;
      }
      detail::futex_wait(&seq_, seq, -1);
      retire();
    }
  }

  // wait_event_timeout: returns pred()'s last value, true if it became true within
  // `timeout`.
  template <class Pred, class Rep, class Per>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Per> timeout) {
    if (pred()) return true;
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    for (;;) {
      const std::uint32_t seq = announce();
      if (pred()) {
        retire();
        return true;
      }
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        retire();
        return pred();
      }
      detail::futex_wait(&seq_, seq,
                         std::chrono::duration_cast<std::chrono::nanoseconds>(left).count());
      retire();
      if (pred()) return true;
    }
  }

  // wake_up_all: wakes every waiter. Call it after making a predicate true.
  void wake_up() noexcept {
    // RMW, not a load: see the header comment (it pairs with announce()).
    if (waiters_.fetch_add(0, std::memory_order_seq_cst) == 0) return;
    // seq_cst: pairs with the load of seq_ in announce(); the futex compares the same word.
    seq_.fetch_add(1, std::memory_order_seq_cst);
    detail::futex_wake_all(&seq_);
  }

  // Threads currently between announce and retire (tests).
  [[nodiscard]] std::uint32_t waiters() const noexcept {
    return waiters_.load(std::memory_order_relaxed);  // relaxed: a snapshot for tests
  }

 private:
  std::uint32_t announce() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);  // pairs with wake_up()'s RMW
    // seq_cst: pairs with wake_up()'s increment of seq_ (a wake-up after this load
    // changes the word, so the futex wait returns at once).
    return seq_.load(std::memory_order_seq_cst);
  }
  // relaxed: a count that is still high only costs wake_up() a needless futex call.
  void retire() noexcept { waiters_.fetch_sub(1, std::memory_order_relaxed); }

  std::atomic<std::uint32_t> seq_{0};      // bumped by every wake_up that had waiters
  std::atomic<std::uint32_t> waiters_{0};  // threads that may be asleep on seq_
};

}  // namespace llbitmap
