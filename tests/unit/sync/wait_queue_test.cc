// SPDX-License-Identifier: LGPL-2.1-or-later
//
// WaitQueue: wait / wait_for / wake_up, and no lost wake-ups (docs/design.md#page-barrier).
#include <llbitmap/wait_queue.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "start_gate.h"

namespace llbitmap {
namespace {

using namespace std::chrono_literals;

TEST(WaitQueueTest, WaitReturnsAtOnceWhenThePredicateHolds) {
  WaitQueue q;
  q.wait([] { return true; });
  EXPECT_TRUE(q.wait_for([] { return true; }, 0ms));
  EXPECT_EQ(q.waiters(), 0u);
}

TEST(WaitQueueTest, WaitForTimesOutAndReturnsThePredicate) {
  WaitQueue q;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(q.wait_for([] { return false; }, 20ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);  // "at least", never "at most"
  EXPECT_EQ(q.waiters(), 0u);
}

TEST(WaitQueueTest, WakeUpWithoutWaitersIsHarmless) {
  WaitQueue q;
  for (int i = 0; i < 1000; ++i) q.wake_up();
  EXPECT_EQ(q.waiters(), 0u);
}

TEST(WaitQueueTest, WakesAWaiterThatIsAlreadyAsleep) {
  WaitQueue q;
  std::atomic<bool> ready{false};
  std::thread waiter([&] { q.wait([&] { return ready.load(std::memory_order_relaxed); }); });
  test::spin_until([&] { return q.waiters() == 1; });  // it announced itself
  ready.store(true, std::memory_order_relaxed);        // relaxed on purpose: wake_up orders it
  q.wake_up();
  waiter.join();
  EXPECT_EQ(q.waiters(), 0u);
}

TEST(WaitQueueTest, ConditionSetBeforeTheWaiterArrivesIsSeen) {
  WaitQueue q;
  std::atomic<bool> ready{false};
  ready.store(true, std::memory_order_relaxed);
  q.wake_up();  // nobody waits yet
  std::thread waiter([&] { q.wait([&] { return ready.load(std::memory_order_relaxed); }); });
  waiter.join();
}

TEST(WaitQueueTest, WakeUpWakesEveryWaiter) {
  WaitQueue q;
  std::atomic<bool> ready{false};
  std::vector<std::thread> ws;
  for (int i = 0; i < 4; ++i)
    ws.emplace_back([&] { q.wait([&] { return ready.load(std::memory_order_relaxed); }); });
  test::spin_until([&] { return q.waiters() == 4; });
  ready.store(true, std::memory_order_relaxed);
  q.wake_up();
  for (auto& w : ws) w.join();
}

TEST(WaitQueueTest, WaitForReturnsTrueWhenWoken) {
  WaitQueue q;
  std::atomic<bool> ready{false};
  bool got = false;
  std::thread waiter(
      [&] { got = q.wait_for([&] { return ready.load(std::memory_order_relaxed); }, 60s); });
  test::spin_until([&] { return q.waiters() == 1; });
  ready.store(true, std::memory_order_relaxed);
  q.wake_up();
  waiter.join();
  EXPECT_TRUE(got);
}

TEST(WaitQueueTest, PingPongNeverLosesAWakeUp) {
  // Two threads hand a token back and forth 20,000 times through two queues; a lost
  // wake-up hangs one side, which the watchdog turns into a failure.
  WaitQueue to_a, to_b;
  std::atomic<int> token{0};
  constexpr int kRounds = 20000;
  test::Flag done;
  std::thread a([&] {
    for (int i = 0; i < kRounds; ++i) {
      to_a.wait([&] { return token.load(std::memory_order_relaxed) == 2 * i; });
      token.store(2 * i + 1, std::memory_order_relaxed);
      to_b.wake_up();
    }
  });
  std::thread b([&] {
    for (int i = 0; i < kRounds; ++i) {
      to_b.wait([&] { return token.load(std::memory_order_relaxed) == 2 * i + 1; });
      token.store(2 * i + 2, std::memory_order_relaxed);
      to_a.wake_up();
    }
    done.set();
  });
  const bool finished = done.wait_for(120s);
  if (!finished) {
    ADD_FAILURE() << "lost wake-up: token stuck at " << token.load();
    std::abort();  // the threads would never join
  }
  a.join();
  b.join();
  EXPECT_EQ(token.load(), 2 * kRounds);
}

}  // namespace
}  // namespace llbitmap
