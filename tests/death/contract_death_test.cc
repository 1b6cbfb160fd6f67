// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Misuse aborts with a message that names the object and the broken rule
// (docs/design.md#conventions).
#include <llbitmap/bitmap.h>
#include <llbitmap/page_barrier.h>
#include <llbitmap/percpu_ref.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <span>
#include <thread>

#include "bitmap_fixture.h"

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

// A non-blocking suspend ends with kSuspended or kReopened; a poll after that has no
// suspend to report on (the page may be resumed and suspended again meanwhile).
TEST(ContractDeathTest, PollSuspendAfterItReturnedSuspended) {
  EXPECT_DEATH(
      {
        FakeClock clock;
        PageBarrier page(clock);
        PageBarrier* self = &page;
        PageBarrier::begin_suspend_many(std::span<PageBarrier* const>(&self, 1));
        while (page.poll_suspend(clock.now(), 1000ms) != PageBarrier::SuspendPoll::kSuspended)
          std::this_thread::yield();
        (void)page.poll_suspend(clock.now(), 1000ms);
      },
      "PageBarrier .*poll_suspend\\(\\) without a non-blocking suspend in progress");
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

// ---------------------------------------------------------------- Bitmap

constexpr std::uint64_t kChunk = 64 << 10;

std::unique_ptr<Bitmap> small_bitmap(FakeClock& clock) {
  BitmapOptions o;
  o.device_bytes = 1ull << 30;  // 16384 chunks of 64 KiB; chunks 0 .. 3071 share page 0
  o.start_daemon = false;
  o.clock = &clock;
  std::error_code ec;
  auto t = test::make_bitmap(o, ec);
  if (!t.bitmap) std::abort();
  return std::move(t.bitmap);
}

// The calls bitmap.h says need an open bitmap abort after close(), in every build.
TEST(ContractDeathTest, ResyncCallsAndRunDaemonOnceAfterCloseAbort) {
  FakeClock clock;
  auto bm = small_bitmap(clock);
  ASSERT_FALSE(bm->close());
  EXPECT_DEATH(bm->start_sync(0), "Bitmap .*start_sync after close\\(\\)");
  EXPECT_DEATH(bm->end_sync(0), "Bitmap .*end_sync after close\\(\\)");
  EXPECT_DEATH(bm->abort_sync(0), "Bitmap .*abort_sync after close\\(\\)");
  EXPECT_DEATH(bm->close_sync(), "Bitmap .*close_sync after close\\(\\)");
  EXPECT_DEATH(bm->run_daemon_once(), "Bitmap .*run_daemon_once after close\\(\\)");
}

#ifndef NDEBUG
// An end_write of a chunk with no write in flight aborts at once in debug builds, also
// while another write holds the same page: the page barrier alone cannot see it (the
// page's count just drops to zero, and the daemon could then clean the page under the
// other write).
TEST(ContractDeathTest, UnmatchedEndWriteAbortsWhileAnotherWriteHoldsThePage) {
  EXPECT_DEATH(
      {
        FakeClock clock;
        auto bm = small_bitmap(clock);
        std::thread other([&] {
          if (bm->start_write(0, 4096)) std::abort();  // chunk 0, held: page 0 raised
        });
        other.join();
        bm->end_write(kChunk, 4096);  // chunk 1, page 0: never started
      },
      "Bitmap .*end_write\\(65536, 4096\\) without a matching start: chunk 1 has no write");
}

TEST(ContractDeathTest, UnmatchedEndDiscardAborts) {
  EXPECT_DEATH(
      {
        FakeClock clock;
        auto bm = small_bitmap(clock);
        if (bm->start_write(0, 4096)) std::abort();
        bm->end_discard(kChunk, kChunk);
      },
      "Bitmap .*end_discard\\(65536, 65536\\) without a matching start: chunk 1");
}
#else
TEST(ContractDeathTest, UnmatchedEndWriteAbortsWhileAnotherWriteHoldsThePage) {
  GTEST_SKIP() << "the ledger of writes in flight exists only in builds without NDEBUG";
}
#endif

}  // namespace
}  // namespace llbitmap
