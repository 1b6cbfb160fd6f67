// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Misuse aborts with a message that names the object and the broken rule
// (docs/design.md#conventions).
#include <llbitmap/page_barrier.h>
#include <llbitmap/percpu_ref.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace llbitmap {
namespace {

using namespace std::chrono_literals;

void wait_forever_for_zero(const PercpuRef& ref) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!ref.is_zero() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
}

TEST(ContractDeathTest, PutBelowZeroInAtomicMode) {
  EXPECT_DEATH(
      {
        PercpuRef ref(nullptr, RefFlags::kInitAtomic);
        ref.put();
        ref.put();
      },
      "PercpuRef .*put\\(1\\) below zero");
}

TEST(ContractDeathTest, PutBelowZeroInPercpuModeIsCaughtAtTheFold) {
  EXPECT_DEATH(
      {
        PercpuRef ref(nullptr);
        ref.put();
        ref.put();
        ref.kill();
        wait_forever_for_zero(ref);
      },
      "PercpuRef .*after switching to atomic mode: put below zero");
}

TEST(ContractDeathTest, DoubleKill) {
  EXPECT_DEATH(
      {
        PercpuRef ref(nullptr);
        ref.get();
        ref.kill();
        ref.kill();
      },
      "PercpuRef .*kill\\(\\) called more than once");
}

TEST(ContractDeathTest, ResurrectOfALiveRef) {
  EXPECT_DEATH(
      {
        PercpuRef ref(nullptr, RefFlags::kAllowReinit);
        ref.resurrect();
      },
      "PercpuRef .*resurrect\\(\\) of a ref that is not dying");
}

TEST(ContractDeathTest, ResurrectWithoutAllowReinit) {
  EXPECT_DEATH(
      {
        PercpuRef ref(nullptr);
        ref.kill();
        wait_forever_for_zero(ref);
        ref.resurrect();
      },
      "PercpuRef .*needs RefFlags::kAllowReinit");
}

TEST(ContractDeathTest, DestroyWithReferencesHeld) {
  EXPECT_DEATH(
      {
        PercpuRef ref(nullptr);
        ref.get();
      },
      "PercpuRef .*destroyed with 1 references beyond the initial one");
}

TEST(ContractDeathTest, DestroyWhileDyingWithHolders) {
  EXPECT_DEATH(
      {
        PercpuRef ref(nullptr);
        ref.get();
        ref.switch_to_atomic_sync();
        ref.kill();
      },
      "PercpuRef .*destroyed while dying with 1 references still held");
}

TEST(ContractDeathTest, ReinitOfANonZeroRef) {
  EXPECT_DEATH(
      {
        PercpuRef ref(nullptr, RefFlags::kAllowReinit);
        ref.reinit();
      },
      "PercpuRef .*reinit\\(\\) of a ref that is not zero");
}

TEST(ContractDeathTest, ResumeOfAPageThatIsNotSuspended) {
  EXPECT_DEATH(
      {
        FakeClock clock;
        PageBarrier page(clock);
        page.resume();
      },
      "PageBarrier .*resume\\(\\) of a page that is not suspended");
}

TEST(ContractDeathTest, SuspendOfASuspendedPage) {
  EXPECT_DEATH(
      {
        FakeClock clock;
        PageBarrier page(clock);
        (void)page.suspend(1000ms);
        (void)page.suspend(1000ms);
      },
      "PageBarrier .*suspend\\(\\) of a page already suspended");
}

// The suspend's kill catches the extra release in one of two places, depending on whether
// the switch thread folds the counters before or after the kill drops the initial
// reference: at the fold ("... put below zero") or at the switch thread's own put
// ("put(1) below zero"). Either way the ref and the rule are named.
TEST(ContractDeathTest, ReleaseWithoutRaiseIsCaughtAtTheNextSuspend) {
  EXPECT_DEATH(
      {
        FakeClock clock;
        PageBarrier page(clock);
        page.release();
        (void)page.suspend(5000ms);
      },
      "PercpuRef .*below zero");
}

TEST(ContractDeathTest, DestroyAPageWithAWriteInFlight) {
  EXPECT_DEATH(
      {
        FakeClock clock;
        PageBarrier page(clock);
        page.raise();
      },
      "PercpuRef .*destroyed with 1 references beyond the initial one");
}

}  // namespace
}  // namespace llbitmap
