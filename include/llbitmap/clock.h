// SPDX-License-Identifier: LGPL-2.1-or-later
//
// clock.h: a monotonic clock with a coarse "jiffies" word for fast paths, and a fake
// for tests.
//
// Layer 1. Clock::now() reads the time source (and refreshes the coarse word); it is
// for the daemon and other slow paths. coarse_now() is one relaxed load of the coarse
// word: it never runs ahead of now() and lags it by at most the finest resolution any
// live Clock::Subscription asked for. The system clock keeps the word current with a
// ticker thread that runs only while subscriptions exist (it sleeps one resolution
// between ticks, so a 5 s barrier_idle costs about two wake-ups a second); FakeClock
// moves only when a test calls advance() or set().
//
// The coarse word sits on its own cache line and is stored only when its value
// changes, so readers on many threads keep it shared.
//
// Threads: every member is safe to call from any thread. now() never blocks;
// subscribe() may briefly take a mutex and start the ticker thread. A Subscription
// object is a value like any other: subscribing and dropping subscriptions may happen on
// many threads at once, but one Subscription is assigned or destroyed by one thread at a
// time (PageBarrier::set_barrier_idle serialises the replacement of its own).
//
// Memory ordering: none beyond the value itself (relaxed); a time is a hint for
// expiry decisions, never a synchronisation point.
#pragma once

#include <llbitmap/detail/cacheline.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace llbitmap {

class Clock {
 public:
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<Clock, duration>;
  // The name the standard's Clock requirements give it.
  // NOLINTNEXTLINE(readability-identifier-naming)
  static constexpr bool is_steady = true;

  // A request to keep the coarse word within `resolution` of now(); released on
  // destruction. Move-only.
  class Subscription {
   public:
    Subscription() = default;
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;
    Subscription(Subscription&& other) noexcept;
    Subscription& operator=(Subscription&& other) noexcept;
    ~Subscription();

   private:
    friend class Clock;
    Subscription(Clock* clock, duration resolution) : clock_(clock), resolution_(resolution) {}
    Clock* clock_ = nullptr;
    duration resolution_{};
  };

  virtual ~Clock() = default;

  // The current time from the source; also refreshes the coarse word.
  virtual time_point now() noexcept = 0;

  // The coarse word: one relaxed load, no clock call.
  [[nodiscard]] time_point coarse_now() const noexcept {
    return time_point(duration(coarse_.load(std::memory_order_relaxed)));
  }

  [[nodiscard]] Subscription subscribe(duration resolution);

  // The process-wide monotonic clock (std::chrono::steady_clock with a ticker).
  static Clock& system() noexcept;

 protected:
  Clock() = default;
  // Check-then-store: keeps the line shared while the value does not change. relaxed, as
  // coarse_now(): a time is a hint, never a synchronisation point (header comment).
  void publish(rep ticks) noexcept {
    if (coarse_.load(std::memory_order_relaxed) != ticks)
      coarse_.store(ticks, std::memory_order_relaxed);
  }
  virtual void add_subscription(duration resolution) = 0;
  virtual void remove_subscription(duration resolution) noexcept = 0;

 private:
  alignas(detail::kCacheLine) std::atomic<rep> coarse_{0};
  char pad_[detail::kCacheLine - sizeof(std::atomic<rep>)]{};
};

// A clock that moves only when told to: coarse_now() == now() at all times.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(time_point start = time_point(std::chrono::seconds(1000))) noexcept {
    set(start);
  }
  // relaxed: a time is a hint (header comment); the test orders its own steps.
  time_point now() noexcept override {
    return time_point(duration(now_.load(std::memory_order_relaxed)));
  }
  void advance(duration d) noexcept { set(now() + d); }
  void set(time_point t) noexcept {
    now_.store(t.time_since_epoch().count(), std::memory_order_relaxed);  // relaxed: a hint
    publish(t.time_since_epoch().count());
  }

 private:
  void add_subscription(duration) override {}
  void remove_subscription(duration) noexcept override {}
  std::atomic<rep> now_{0};
};

}  // namespace llbitmap
