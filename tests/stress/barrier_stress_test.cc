// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Stress: writers raising and releasing on a few pages while a suspender drains and
// reopens them. The invariant: no writer is inside a page while it is suspended, and
// every writer eventually gets in. Bounded by iterations (LLBM_STRESS_SCALE multiplies).
#include <llbitmap/page_barrier.h>

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

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
  for (int c = 0; c < cycles; ++c) {
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
      cycles, timeouts, min_ops, max_ops, waits, suspend_waits, violations.load());
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

}  // namespace
}  // namespace llbitmap
