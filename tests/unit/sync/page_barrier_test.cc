// SPDX-License-Identifier: LGPL-2.1-or-later
//
// PageBarrier: raise / release / suspend / resume / expired (docs/design.md#page-barrier),
// including the two upstream barrier bugs: a suspend timeout must resurrect the page
// (d119bd2e1643, CVE-2026-45955) and wake the writers that queued meanwhile (still
// missing upstream).
#include <llbitmap/page_barrier.h>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <ostream>
#include <span>
#include <thread>
#include <vector>

#include "start_gate.h"
#include "switch_worker.h"
#include "sync_point.h"

namespace llbitmap {

// Names the step in a failed expectation (gtest finds it by argument-dependent lookup).
void PrintTo(PageBarrier::SuspendPoll p, std::ostream* os) {
  constexpr const char* kNames[] = {"kConfirming", "kDraining", "kSuspended", "kReopened"};
  *os << kNames[static_cast<int>(p)];
}

namespace {

using namespace std::chrono_literals;

// Joins `t`, failing (and aborting, since the thread cannot be abandoned) if it does not
// finish: a watchdog for "this writer must not hang", never an ordering tool.
void join_or_die(std::thread& t, test::Flag& done, const char* what) {
  if (!done.wait_for(60s)) {
    ADD_FAILURE() << what;
    std::fprintf(stderr, "hang: %s\n", what);
    std::abort();
  }
  t.join();
}

TEST(PageBarrierTest, RaiseReleaseAndSuspendAnIdlePage) {
  FakeClock clock;
  PageBarrier page(clock, 5000ms);
  page.raise();
  page.release();
  ASSERT_TRUE(page.suspend(1000ms));
  EXPECT_TRUE(page.is_suspended());
  page.resume();
  EXPECT_FALSE(page.is_suspended());
  page.raise();
  page.release();
  EXPECT_EQ(page.stats().suspends, 1u);
  EXPECT_EQ(page.stats().suspend_timeouts, 0u);
}

TEST(PageBarrierTest, SuspendWaitsForTheHolderToRelease) {
  FakeClock clock;
  PageBarrier page(clock);
  page.raise();  // an in-flight write
  test::Flag done;
  bool suspended = false;
  std::thread daemon([&] {
    suspended = page.suspend(60s);
    done.set();
  });
  test::spin_until([&] { return page.stats().suspend_waits == 1; });
  EXPECT_FALSE(done.is_set());  // it cannot finish while the write is in flight
  page.release();
  join_or_die(daemon, done, "suspend did not end after the last release");
  EXPECT_TRUE(suspended);
  page.resume();
}

TEST(PageBarrierTest, ResumeWakesWritersBlockedOnASuspendedPage) {
  FakeClock clock;
  PageBarrier page(clock);
  ASSERT_TRUE(page.suspend(1000ms));
  constexpr int kWriters = 3;
  std::atomic<int> entered{0};
  std::vector<std::thread> writers;
  std::vector<std::unique_ptr<test::Flag>> done;
  for (int i = 0; i < kWriters; ++i) {
    done.push_back(std::make_unique<test::Flag>());
    writers.emplace_back([&, i] {
      page.raise();
      entered.fetch_add(1);
      page.release();
      done[static_cast<std::size_t>(i)]->set();
    });
  }
  test::spin_until([&] { return page.stats().raise_waits == kWriters; });
  EXPECT_EQ(entered.load(), 0);
  page.resume();
  for (int i = 0; i < kWriters; ++i)
    join_or_die(writers[static_cast<std::size_t>(i)], *done[static_cast<std::size_t>(i)],
                "a writer slept through resume() (lost wake-up)");
  EXPECT_EQ(entered.load(), kWriters);
}

TEST(PageBarrierTest, SuspendTimeoutReopensThePage) {
  // Upstream d119bd2e1643 (CVE-2026-45955): a timed-out suspend left the page killed and
  // every later writer hung.
  FakeClock clock;
  PageBarrier page(clock);
  page.raise();  // a write that outlives the daemon's patience
  EXPECT_FALSE(page.suspend(10ms));
  EXPECT_FALSE(page.is_suspended());
  EXPECT_EQ(page.stats().suspend_timeouts, 1u);
  test::Flag done;
  std::thread writer([&] {
    page.raise();
    page.release();
    done.set();
  });
  join_or_die(writer, done, "a writer hung on a page left killed after a suspend timeout");
  page.release();
  // The next pass succeeds once the slow write is gone.
  ASSERT_TRUE(page.suspend(1000ms));
  page.resume();
}

TEST(PageBarrierTest, SuspendTimeoutWakesWritersThatQueuedMeanwhile) {
  // Upstream still misses this: writers that blocked on the dying page while the suspend
  // waited must be woken when the suspend gives up, not only at a later resume().
  FakeClock clock;
  PageBarrier page(clock);
  page.raise();  // the slow write that makes the suspend time out
  test::Flag suspend_done;
  bool suspended = true;
  std::thread daemon([&] {
    suspended = page.suspend(500ms);
    suspend_done.set();
  });
  test::spin_until([&] { return page.is_suspended(); });  // killed, draining
  test::Flag writer_done;
  std::thread writer([&] {
    page.raise();  // blocks: the page is dying
    page.release();
    writer_done.set();
  });
  test::spin_until([&] { return page.stats().raise_waits == 1; });
  join_or_die(daemon, suspend_done, "suspend did not time out");
  EXPECT_FALSE(suspended);
  join_or_die(writer, writer_done, "a writer queued during a timed-out suspend was never woken");
  page.release();
}

TEST(PageBarrierTest, ExpiresBarrierIdleAfterTheLastRaise) {
  FakeClock clock;
  PageBarrier page(clock, 5000ms);
  EXPECT_FALSE(page.expired(clock.now())) << "a page never raised does not expire";
  page.raise();
  page.release();
  const auto t0 = clock.now();
  EXPECT_FALSE(page.expired(t0));
  EXPECT_FALSE(page.expired(t0 + 4999ms));
  EXPECT_TRUE(page.expired(t0 + 5000ms));
  clock.advance(3000ms);
  page.raise();  // a new write pushes the expiry out
  page.release();
  EXPECT_FALSE(page.expired(t0 + 5000ms));
  EXPECT_TRUE(page.expired(t0 + 8000ms));
}

TEST(PageBarrierTest, ResumedPageNeverExpiresUntilTheNextRaise) {
  FakeClock clock;
  PageBarrier page(clock, 5000ms);
  page.raise();
  page.release();
  ASSERT_TRUE(page.suspend(1000ms));
  page.resume();
  clock.advance(std::chrono::hours(1000));
  EXPECT_FALSE(page.expired(clock.now()));
  page.expire_now();
  EXPECT_TRUE(page.expired(clock.now()));
  page.raise();
  page.release();
  EXPECT_FALSE(page.expired(clock.now()));
}

// An expire_now() (end_sync, close_sync) that lands while the page is suspended is not
// undone by the resume; one made before the suspend is served by it.
TEST(PageBarrierTest, ExpireNowWhileSuspendedOutlivesTheResume) {
  FakeClock clock;
  PageBarrier page(clock, 5000ms);
  page.expire_now();
  ASSERT_TRUE(page.suspend(1000ms));
  page.resume();
  EXPECT_FALSE(page.expired(clock.now())) << "an expire_now() before the suspend was served";
  ASSERT_TRUE(page.suspend(1000ms));
  page.expire_now();
  page.resume();
  EXPECT_TRUE(page.expired(clock.now())) << "the resume undid an expire_now()";
  page.raise();
  page.release();
  EXPECT_FALSE(page.expired(clock.now()));
}

TEST(PageBarrierTest, ResumeExpiredLeavesThePageExpiredUntilTheNextRaise) {
  FakeClock clock;
  PageBarrier page(clock, 5000ms);
  page.raise();
  page.release();
  ASSERT_TRUE(page.suspend(1000ms));
  page.resume_expired();
  EXPECT_FALSE(page.is_suspended());
  EXPECT_TRUE(page.expired(clock.now()));
  page.raise();
  page.release();
  EXPECT_FALSE(page.expired(clock.now()));
}

TEST(PageBarrierTest, TryRaiseNeverWaitsForASuspendedPage) {
  FakeClock clock;
  PageBarrier page(clock, 5000ms);
  std::thread first_use([&] {  // a thread with no counter for the page yet
    EXPECT_TRUE(page.try_raise());
    page.release();
  });
  first_use.join();
  ASSERT_TRUE(page.suspend(1000ms));
  EXPECT_FALSE(page.try_raise());  // returns at once: the test would hang otherwise
  EXPECT_EQ(page.stats().raise_waits, 1u);
  page.resume();
  ASSERT_TRUE(page.try_raise());
  EXPECT_FALSE(page.suspend(1ms)) << "try_raise() returned true without entering the page";
  page.release();
}

TEST(PageBarrierTest, BarrierIdleIsAdjustable) {
  FakeClock clock;
  PageBarrier page(clock, 5000ms);
  page.set_barrier_idle(100ms);
  EXPECT_EQ(page.barrier_idle(), 100ms);
  page.raise();
  page.release();
  EXPECT_TRUE(page.expired(clock.now() + 100ms));
}

// Bitmap::set_barrier_idle may run on any thread, so two threads may set the idle time
// of the same page at once: each replaces the page's clock subscription, and they must
// not do that at the same time (ThreadSanitizer reports the unserialised version as a
// data race in Clock::Subscription's move assignment). The system clock, as a Bitmap
// uses it.
TEST(PageBarrierTest, BarrierIdleMayBeSetFromTwoThreadsAtOnce) {
  PageBarrier page(Clock::system(), 5000ms);
  constexpr int kRounds = 2000;
  test::StartGate gate(2);
  auto setter = [&](std::chrono::milliseconds idle) {
    gate.arrive_and_wait();
    for (int i = 0; i < kRounds; ++i)
      page.set_barrier_idle(idle + std::chrono::milliseconds(i % 2));
  };
  std::thread a(setter, 100ms);
  std::thread b(setter, 200ms);
  gate.open_when_ready();
  a.join();
  b.join();
  // The last call of one of the two won (idle + 1 ms: kRounds is even).
  const auto idle = page.barrier_idle();
  EXPECT_TRUE(idle == 101ms || idle == 201ms) << idle.count();
  // And the page still honours it.
  page.set_barrier_idle(100ms);
  EXPECT_EQ(page.barrier_idle(), 100ms);
}

TEST(PageBarrierTest, SuspendManySharesOneGracePeriod) {
  FakeClock clock;
  // The switch thread is started by the first kill of the process. Started inside the
  // batch below, it could take the kills queued so far before the batch ends, and do it
  // more than once while the rest are queued (seen under tsan): start it, and let it go
  // idle, first.
  {
    PageBarrier warm(clock);
    std::array<PageBarrier*, 1> one{&warm};
    std::array<bool, 1> warm_ok{};
    ASSERT_EQ(PageBarrier::suspend_many(one, 5000ms, warm_ok), 1u);
    warm.resume();
  }
  std::vector<std::unique_ptr<PageBarrier>> pages;
  std::vector<PageBarrier*> ptrs;
  for (int i = 0; i < 32; ++i) {
    pages.push_back(std::make_unique<PageBarrier>(clock));
    ptrs.push_back(pages.back().get());
    ptrs.back()->raise();
    ptrs.back()->release();
  }
  std::array<bool, 32> ok{};
  const auto gp_before = detail::SwitchWorker::instance().grace_periods();
  EXPECT_EQ(PageBarrier::suspend_many(ptrs, 5000ms, ok), 32u);
  const auto gp_after = detail::SwitchWorker::instance().grace_periods();
  for (bool b : ok) EXPECT_TRUE(b);
  // One batch: the kills were queued before the switch thread was woken.
  EXPECT_LE(gp_after - gp_before, 2u) << "each page paid its own grace period";
  for (auto* p : ptrs) p->resume();
}

TEST(PageBarrierTest, SuspendManyReopensOnlyThePagesThatTimedOut) {
  FakeClock clock;
  PageBarrier a(clock), b(clock);
  b.raise();  // b has a stuck write
  std::array<PageBarrier*, 2> ptrs{&a, &b};
  std::array<bool, 2> ok{};
  EXPECT_EQ(PageBarrier::suspend_many(ptrs, 20ms, ok), 1u);
  EXPECT_TRUE(ok[0]);
  EXPECT_FALSE(ok[1]);
  EXPECT_TRUE(a.is_suspended());
  EXPECT_FALSE(b.is_suspended());
  a.resume();
  b.release();
}

// ---------------------------------------------------------------- non-blocking suspend
// begin_suspend_many + poll_suspend, driven by explicit polls on a fake clock: the test
// thread never waits for the switch thread except by polling.

using Poll = PageBarrier::SuspendPoll;

// Polls until the kill is confirmed, moving the fake clock an hour between polls: the
// allowance must not start before the confirmation, so this never reaches kReopened by
// itself. A watchdog turns a kill that never confirms into a failure.
Poll poll_past_confirming(PageBarrier& page, FakeClock& clock, std::chrono::milliseconds timeout) {
  const auto watchdog = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    const Poll r = page.poll_suspend(clock.now(), timeout);
    if (r != Poll::kConfirming) return r;
    if (std::chrono::steady_clock::now() > watchdog) {
      std::fprintf(stderr, "hang: the kill of a non-blocking suspend was never confirmed\n");
      std::abort();
    }
    clock.advance(std::chrono::hours(1));
    std::this_thread::yield();
  }
}

#ifdef LLBM_SYNC_POINTS
// Holds the switch thread right after it confirmed a kill, before it drops the reference it
// holds across the switch: the window in which a poll must still say kConfirming.
class HoldSwitchAfterConfirm {
 public:
  HoldSwitchAfterConfirm() {
    detail::SyncPoints::set("switch:after_confirm", [this] {
      reached_.set();
      go_.wait();
    });
  }
  ~HoldSwitchAfterConfirm() { detail::SyncPoints::clear("switch:after_confirm"); }
  void wait_reached() { reached_.wait(); }
  void release() { go_.set(); }

 private:
  test::Flag reached_;
  test::Flag go_;
};
#endif

TEST(PageBarrierNonBlockingSuspendTest, IdlePageIsSuspendedAfterTheConfirmation) {
  FakeClock clock;
  PageBarrier page(clock);
  page.raise();
  page.release();
  PageBarrier* self = &page;
#ifdef LLBM_SYNC_POINTS
  {
    // Confirmed, but the switch thread still holds its reference: an idle page must not
    // be taken for one with a holder (nor given up), and the allowance has not started.
    HoldSwitchAfterConfirm hold;
    PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
    EXPECT_TRUE(page.is_suspended()) << "the kill is visible at once";
    hold.wait_reached();
    EXPECT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kConfirming);
    clock.advance(std::chrono::hours(1));
    EXPECT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kConfirming);
    hold.release();
    EXPECT_EQ(poll_past_confirming(page, clock, 1000ms), Poll::kSuspended);
  }
#else
  PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
  EXPECT_TRUE(page.is_suspended()) << "the kill is visible at once";
  EXPECT_EQ(poll_past_confirming(page, clock, 1000ms), Poll::kSuspended);
#endif
  EXPECT_TRUE(page.is_suspended());
  EXPECT_EQ(page.stats().suspends, 1u);
  EXPECT_EQ(page.stats().suspend_waits, 0u);
  EXPECT_EQ(page.stats().suspend_timeouts, 0u);
  // A writer that meets the suspended page blocks in raise() until resume() wakes it.
  test::Flag done;
  std::thread writer([&] {
    page.raise();
    page.release();
    done.set();
  });
  test::spin_until([&] { return page.stats().raise_waits == 1; });
  EXPECT_FALSE(done.is_set());
  page.resume();
  join_or_die(writer, done, "resume() after a non-blocking suspend did not wake the writer");
  EXPECT_FALSE(page.is_suspended());
  ASSERT_TRUE(page.try_raise());
  page.release();
}

TEST(PageBarrierNonBlockingSuspendTest, DrainsUntilTheHolderReleases) {
  FakeClock clock;
  PageBarrier page(clock);
  page.raise();  // an in-flight write
  PageBarrier* self = &page;
  // The clock moves an hour per confirming poll: the 1000 ms allowance starts only once
  // the kill is confirmed (and the switch thread done).
#ifdef LLBM_SYNC_POINTS
  {
    HoldSwitchAfterConfirm hold;  // so that there are confirming polls
    PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
    hold.wait_reached();
    EXPECT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kConfirming);
    clock.advance(std::chrono::hours(1));
    EXPECT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kConfirming);
    hold.release();
    ASSERT_EQ(poll_past_confirming(page, clock, 1000ms), Poll::kDraining);
  }
#else
  PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
  ASSERT_EQ(poll_past_confirming(page, clock, 1000ms), Poll::kDraining);
#endif
  EXPECT_EQ(page.stats().suspend_waits, 1u);
  clock.advance(999ms);
  EXPECT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kDraining);
  EXPECT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kDraining);
  EXPECT_TRUE(page.is_suspended());
  page.release();
  EXPECT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kSuspended);
  EXPECT_EQ(page.stats().suspends, 1u);
  EXPECT_EQ(page.stats().suspend_waits, 1u) << "counted once per suspend, not per poll";
  EXPECT_EQ(page.stats().suspend_timeouts, 0u);
  page.resume();
}

TEST(PageBarrierNonBlockingSuspendTest, HolderOutlivingTheAllowanceReopensAndWakesWriters) {
  FakeClock clock;
  PageBarrier page(clock);
  page.raise();  // a write that outlives the allowance
  PageBarrier* self = &page;
  PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
  ASSERT_EQ(poll_past_confirming(page, clock, 500ms), Poll::kDraining);
  // A writer queues on the draining page.
  test::StartGate gate(1);
  test::Flag done;
  std::thread writer([&] {
    gate.arrive_and_wait();
    page.raise();  // blocks: the page is dying
    page.release();
    done.set();
  });
  gate.open_when_ready();
  test::spin_until([&] { return page.stats().raise_waits == 1; });
  EXPECT_FALSE(done.is_set());
  clock.advance(499ms);
  EXPECT_EQ(page.poll_suspend(clock.now(), 500ms), Poll::kDraining);
  clock.advance(1ms);
  EXPECT_EQ(page.poll_suspend(clock.now(), 500ms), Poll::kReopened);
  EXPECT_FALSE(page.is_suspended());
  EXPECT_EQ(page.stats().suspend_timeouts, 1u);
  EXPECT_EQ(page.stats().suspends, 0u);
  join_or_die(writer, done, "a writer queued during a reopened non-blocking suspend slept on");
  ASSERT_TRUE(page.try_raise());
  page.release();
  page.raise();
  page.release();
  page.release();  // the slow write ends
  // The next pass succeeds.
  PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
  EXPECT_EQ(poll_past_confirming(page, clock, 500ms), Poll::kSuspended);
  page.resume();
}

TEST(PageBarrierNonBlockingSuspendTest, TryRaiseFailsUntilTheResume) {
  FakeClock clock;
  PageBarrier page(clock);
  std::thread first_use([&] {  // the holder: a thread with its own counter
    EXPECT_TRUE(page.try_raise());
  });
  first_use.join();
  PageBarrier* self = &page;
#ifdef LLBM_SYNC_POINTS
  {
    HoldSwitchAfterConfirm hold;
    PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
    EXPECT_FALSE(page.try_raise()) << "confirming";
    hold.wait_reached();
    EXPECT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kConfirming);
    EXPECT_FALSE(page.try_raise()) << "confirmed, switch thread not done";
    hold.release();
    ASSERT_EQ(poll_past_confirming(page, clock, 1000ms), Poll::kDraining);
  }
#else
  PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
  EXPECT_FALSE(page.try_raise()) << "confirming";
  ASSERT_EQ(poll_past_confirming(page, clock, 1000ms), Poll::kDraining);
#endif
  EXPECT_FALSE(page.try_raise()) << "draining";
  page.release();  // the holder leaves (a release on another thread than the raise)
  ASSERT_EQ(page.poll_suspend(clock.now(), 1000ms), Poll::kSuspended)
      << "a failed try_raise() entered the page";
  EXPECT_FALSE(page.try_raise()) << "suspended";
  page.resume();
  ASSERT_TRUE(page.try_raise());
  page.release();
}

TEST(PageBarrierNonBlockingSuspendTest, BeginSuspendManySharesOneGracePeriod) {
  FakeClock clock;
  constexpr int kPages = 32;
  std::vector<std::unique_ptr<PageBarrier>> pages;
  std::vector<PageBarrier*> ptrs;
  for (int i = 0; i < kPages; ++i) {
    pages.push_back(std::make_unique<PageBarrier>(clock));
    ptrs.push_back(pages.back().get());
    ptrs.back()->raise();
    ptrs.back()->release();
  }
  ptrs[5]->raise();  // one page has a write in flight
  const auto gp_before = detail::SwitchWorker::instance().grace_periods();
  PageBarrier::begin_suspend_many(ptrs);
  std::vector<Poll> result;
  for (auto* p : ptrs) result.push_back(poll_past_confirming(*p, clock, 1000ms));
  const auto gp_after = detail::SwitchWorker::instance().grace_periods();
  for (int i = 0; i < kPages; ++i)
    EXPECT_EQ(result[static_cast<std::size_t>(i)], i == 5 ? Poll::kDraining : Poll::kSuspended)
        << "page " << i;
  // One batch: the kills were queued before the switch thread was woken.
  EXPECT_LE(gp_after - gp_before, 2u) << "each page paid its own grace period";
  ptrs[5]->release();
  EXPECT_EQ(ptrs[5]->poll_suspend(clock.now(), 1000ms), Poll::kSuspended);
  for (auto* p : ptrs) p->resume();
}

// As ExpireNowWhileSuspendedOutlivesTheResume, for the non-blocking suspend.
TEST(PageBarrierNonBlockingSuspendTest, ExpireNowDuringTheSuspendOutlivesTheResume) {
  FakeClock clock;
  PageBarrier page(clock, 5000ms);
  PageBarrier* self = &page;
  page.expire_now();
  PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
  ASSERT_EQ(poll_past_confirming(page, clock, 1000ms), Poll::kSuspended);
  page.resume();
  EXPECT_FALSE(page.expired(clock.now())) << "an expire_now() before the suspend was served";
  PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
  page.expire_now();  // lands before the first poll
  ASSERT_EQ(poll_past_confirming(page, clock, 1000ms), Poll::kSuspended);
  page.resume();
  EXPECT_TRUE(page.expired(clock.now())) << "the resume undid an expire_now()";
  page.raise();
  page.release();
  EXPECT_FALSE(page.expired(clock.now()));
}

}  // namespace
}  // namespace llbitmap
