// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Stress: writers raising and releasing on a few pages while a suspender drains and
// reopens them. The invariant: no writer is inside a page while it is suspended, and
// every writer eventually gets in. Bounded by iterations (LLBM_STRESS_SCALE multiplies).
// And a Bitmap's two-page writes against a flush loop: neither waits for daemon_sleep.
#include <llbitmap/bitmap.h>
#include <llbitmap/page_barrier.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "bitmap_fixture.h"
#include "start_gate.h"

namespace llbitmap {
namespace {

using namespace std::chrono_literals;

int scale() {
  const char* s = std::getenv("LLBM_STRESS_SCALE");
  return s != nullptr && std::atoi(s) > 0 ? std::atoi(s) : 1;
}

TEST(BarrierStressTest, NoWriterInsideASuspendedPage) {
  constexpr int kPages = 4;
  constexpr int kWriters = 3;
  const int cycles = 300 * scale();
  FakeClock clock;
  std::array<std::unique_ptr<PageBarrier>, kPages> pages;
  std::array<std::atomic<int>, kPages> inside{};
  std::array<std::atomic<bool>, kPages> closed{};
  for (int p = 0; p < kPages; ++p)
    pages[static_cast<std::size_t>(p)] = std::make_unique<PageBarrier>(clock);
  std::atomic<bool> stop{false};
  std::atomic<long> violations{0};
  std::array<std::atomic<long>, kWriters> ops{};
  test::StartGate gate(kWriters);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      unsigned x = 12345u + static_cast<unsigned>(w);
      gate.arrive_and_wait();
      while (!stop.load(std::memory_order_relaxed)) {
        x = x * 1103515245u + 12345u;
        const auto p = static_cast<std::size_t>((x >> 16) % kPages);
        pages[p]->raise();
        inside[p].fetch_add(1, std::memory_order_seq_cst);
        if (closed[p].load(std::memory_order_seq_cst)) violations.fetch_add(1);
        inside[p].fetch_sub(1, std::memory_order_seq_cst);
        pages[p]->release();
        ops[static_cast<std::size_t>(w)].fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  gate.open_when_ready();
  long timeouts = 0;
  // At least `cycles` suspends, and on until every writer has run and one has met a
  // suspended page (on a loaded machine the first cycles may all happen before the
  // writers get a core), so the checks below always see an exercised protocol.
  const auto exercised = [&] {
    long waits = 0;
    for (auto& p : pages) waits += static_cast<long>(p->stats().raise_waits);
    for (auto& o : ops)
      if (o.load(std::memory_order_relaxed) == 0) return false;
    return waits > 0;
  };
  int done = 0;
  for (int c = 0; c < cycles || (!exercised() && c < cycles * 1000); ++c, ++done) {
    const auto p = static_cast<std::size_t>(c % kPages);
    if (pages[p]->suspend(5000ms)) {
      closed[p].store(true, std::memory_order_seq_cst);
      if (inside[p].load(std::memory_order_seq_cst) != 0) violations.fetch_add(1);
      closed[p].store(false, std::memory_order_seq_cst);
      pages[p]->resume();
    } else {
      ++timeouts;
    }
  }
  stop.store(true);
  for (auto& t : writers) t.join();
  long min_ops = ops[0].load(), max_ops = ops[0].load(), waits = 0, suspend_waits = 0;
  for (auto& o : ops) {
    min_ops = std::min(min_ops, o.load());
    max_ops = std::max(max_ops, o.load());
  }
  for (auto& p : pages) {
    waits += static_cast<long>(p->stats().raise_waits);
    suspend_waits += static_cast<long>(p->stats().suspend_waits);
  }
  std::printf(
      "barrier stress: %d suspends, %ld timeouts, writer ops min %ld max %ld, "
      "raise waits %ld, suspend waits %ld, violations %ld\n",
      done, timeouts, min_ops, max_ops, waits, suspend_waits, violations.load());
  EXPECT_EQ(violations.load(), 0);
  EXPECT_EQ(timeouts, 0);
  EXPECT_GT(min_ops, 0) << "a writer starved";
  EXPECT_GT(waits, 0) << "no writer ever met a suspended page: not exercised";
}

TEST(BarrierStressTest, ThreadsComeAndGoWhileRefsAreKilledAndResurrected) {
  // Short-lived threads take references and exit; the counts they leave behind must be
  // folded so that every kill reaches zero exactly when the last holder is gone.
  std::atomic<int> releases{0};
  PercpuRef ref([&] { releases.fetch_add(1); }, RefFlags::kAllowReinit);
  const int rounds = 50 * scale();
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; ++i) ts.emplace_back([&] { ref.get(2); });
    for (auto& t : ts) t.join();
    ts.clear();
    for (int i = 0; i < 4; ++i) ts.emplace_back([&] { ref.put(1); });
    for (auto& t : ts) t.join();
    ref.kill();
    ref.put(4);  // the remaining references, dropped after the kill
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!ref.is_zero() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    ASSERT_TRUE(ref.is_zero()) << "round " << r;
    ref.resurrect();
  }
  EXPECT_EQ(releases.load(), rounds);
}

// Writes that span two pages against a flush loop (docs/design.md#page-barrier): three
// threads write the two chunks either side of the page 0 / page 1 boundary while flush()
// runs back to back. A writer that waits for page 1 while it holds page 0 meets a pass that
// killed both and waits for page 0: both then wait until daemon_sleep gives page 0 up.
// Reports the longest flush and start_write; no suspend may time out. daemon_sleep is
// LLBM_STRESS_DAEMON_SLEEP_MS (default 60 s, far above any honest wait).
TEST(BarrierStressTest, TwoPageWritesAndAFlushLoopNeverWaitForDaemonSleep) {
  const char* env = std::getenv("LLBM_STRESS_DAEMON_SLEEP_MS");
  const int env_ms = env != nullptr ? std::atoi(env) : 0;
  const std::chrono::milliseconds daemon_sleep(env_ms > 0 ? env_ms : 60000);
  // Bounded by the passes that suspended pages, not by time.
  const std::uint64_t passes = 300 * static_cast<std::uint64_t>(scale());
  constexpr int kWriters = 3;
  FakeClock clock;
  BitmapOptions o;
  o.device_bytes = 1ull << 30;  // 16384 chunks of 64 KiB, 5 pages
  o.daemon_sleep = daemon_sleep;
  o.start_daemon = false;
  o.clock = &clock;
  std::error_code ec;
  auto t = test::make_bitmap(o, ec);
  ASSERT_FALSE(ec);
  Bitmap& bm = *t.bitmap;
  const std::uint64_t c1 = bm.geometry().first_chunk_of_page(1);
  const std::uint64_t off = bm.geometry().chunk_offset(c1 - 1);
  const std::uint64_t len = 2 * bm.chunk_bytes();

  using Clock = std::chrono::steady_clock;
  std::atomic<bool> stop{false};
  std::atomic<long> writes{0}, errors{0};
  std::atomic<Clock::rep> max_write{0};
  test::StartGate gate(kWriters);
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&] {
      gate.arrive_and_wait();
      while (!stop.load(std::memory_order_relaxed)) {
        const auto t0 = Clock::now();
        if (bm.start_write(off, len)) {
          errors.fetch_add(1);
          continue;
        }
        const Clock::rep d = (Clock::now() - t0).count();
        Clock::rep m = max_write.load();
        while (d > m && !max_write.compare_exchange_weak(m, d)) {
        }
        bm.end_write(off, len);
        writes.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  gate.open_when_ready();
  Clock::duration max_flush{0};
  long flushes = 0;
  while (bm.stats().daemon_passes < passes) {
    const auto t0 = Clock::now();
    EXPECT_FALSE(bm.flush());
    max_flush = std::max(max_flush, Clock::now() - t0);
    ++flushes;
  }
  stop.store(true);
  for (auto& w : writers) w.join();
  const BitmapStats st = bm.stats();
  using us = std::chrono::microseconds;
  std::printf(
      "two-page writes vs flush loop: daemon_sleep %lld ms, %ld flushes, %ld writes, "
      "longest flush %lld us, longest start_write %lld us, suspend timeouts %llu, "
      "raise waits %llu, passes %llu\n",
      static_cast<long long>(daemon_sleep.count()), flushes, writes.load(),
      static_cast<long long>(std::chrono::duration_cast<us>(max_flush).count()),
      static_cast<long long>(
          std::chrono::duration_cast<us>(Clock::duration(max_write.load())).count()),
      static_cast<unsigned long long>(st.suspend_timeouts),
      static_cast<unsigned long long>(st.raise_waits),
      static_cast<unsigned long long>(st.daemon_passes));
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(st.suspend_timeouts, 0u) << "a pass and a two-page write waited for each other";
  EXPECT_LT(max_flush, daemon_sleep);
  EXPECT_LT(Clock::duration(max_write.load()), daemon_sleep);
  EXPECT_GT(writes.load(), 0);
  EXPECT_FALSE(bm.flush());
  EXPECT_EQ(bm.counts().dirty, 0u);
}

}  // namespace
}  // namespace llbitmap
