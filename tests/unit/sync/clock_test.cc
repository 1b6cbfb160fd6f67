// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Clock: the coarse word never runs ahead of now(), a subscription keeps it moving,
// FakeClock moves only when told.
#include <llbitmap/clock.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace llbitmap {
namespace {

using namespace std::chrono_literals;

TEST(ClockTest, FakeClockMovesOnlyWhenTold) {
  FakeClock clock;
  const auto t0 = clock.now();
  EXPECT_EQ(clock.coarse_now(), t0);
  EXPECT_EQ(clock.now(), t0);
  clock.advance(5s);
  EXPECT_EQ(clock.now(), t0 + 5s);
  EXPECT_EQ(clock.coarse_now(), t0 + 5s);
  clock.set(t0);
  EXPECT_EQ(clock.coarse_now(), t0);
}

TEST(ClockTest, SystemCoarseWordNeverRunsAhead) {
  Clock& clock = Clock::system();
  auto sub = clock.subscribe(1ms);
  for (int i = 0; i < 1000; ++i) {
    const auto coarse = clock.coarse_now();
    EXPECT_LE(coarse, clock.now());
  }
}

TEST(ClockTest, SubscriptionKeepsTheCoarseWordMoving) {
  Clock& clock = Clock::system();
  auto sub = clock.subscribe(1ms);
  const auto first = clock.coarse_now();
  // Only the ticker thread refreshes the word while we do not call now().
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (clock.coarse_now() == first && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  EXPECT_GT(clock.coarse_now(), first);
}

TEST(ClockTest, SubscriptionsMove) {
  Clock& clock = Clock::system();
  Clock::Subscription a = clock.subscribe(2ms);
  Clock::Subscription b = std::move(a);
  Clock::Subscription c;
  c = std::move(b);
  SUCCEED();
}

}  // namespace
}  // namespace llbitmap
