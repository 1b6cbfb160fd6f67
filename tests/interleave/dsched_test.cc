// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The writer / daemon / persist protocol for one page and two writers under a seeded
// scheduler (docs/testing.md#seeded-schedules): thousands of interleavings of the library's own
// code, one per seed, with the safety oracle after every step and inside every sync:
//   S2  a chunk whose write is issued (start_write returned, end_write not yet called)
//       is Dirty or NeedSync in the durable image;
//   S1  no sync makes Clean or Unwritten durable for such a chunk.
// With the upstream pre-fix order switched back on (mark before raise), some seeds must
// violate the oracle: the scheduler finds the bug on its own.
#include <llbitmap/bitmap.h>
#include <llbitmap/testing/fault_storage.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <set>

#include "bitmap_fixture.h"
#include "sync_point.h"
#include "sync_scheduler.h"

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kChunk = 64 << 10;

const std::vector<std::string> kPoints = {"start_write:after_raise", "start_write:after_mark",
                                          "start_write:done",        "end_write:before_release",
                                          "persist:after_snapshot",  "persist:before_sync",
                                          "daemon:after_suspend",    "daemon:before_resume",
                                          "barrier:after_kill",      "barrier:raise_wait"};

struct SeedResult {
  int violations = 0;
  std::size_t steps = 0;
  std::uint64_t cleaned = 0, timeouts = 0, raise_waits_hint = 0;
};

SeedResult run_seed(std::uint64_t seed) {
  FakeClock clock;
  BitmapOptions o;
  o.device_bytes = 64ull << 20;  // 1024 chunks: one page, one block
  o.space_bytes = 4096;
  o.daemon_sleep = 4ms;  // the daemon's patience with a write in flight
  o.barrier_idle = 1000ms;
  o.start_daemon = false;
  o.clock = &clock;
  std::error_code ec;
  auto t = test::make_bitmap(o, ec);
  EXPECT_FALSE(ec);
  Bitmap& bm = *t.bitmap;

  std::mutex mu;
  std::set<std::uint64_t> issued;  // guarded by mu
  std::atomic<int> violations{0};
  auto check_image = [&](const std::vector<std::byte>& img) {
    const auto states = test::stored_states(img);
    std::lock_guard lk(mu);
    for (std::uint64_t c : issued) {
      if (!states[c] || (*states[c] != 2 && *states[c] != 3)) violations.fetch_add(1);
    }
  };
  // S1: inside every sync, on the image it makes durable.
  t.storage->set_sync_hook([&](const SyncEvent& ev) -> std::error_code {
    std::vector<std::byte> img(ev.durable_image.begin(), ev.durable_image.end());
    for (const PendingWrite& w : ev.pending)
      std::copy(w.data.begin(), w.data.end(), img.begin() + static_cast<std::ptrdiff_t>(w.offset));
    check_image(img);
    return {};
  });

  SeedResult r;
  {
    test::SyncScheduler sched(seed, kPoints, 2ms);
    for (int w = 0; w < 2; ++w) {
      sched.spawn([&, w] {
        for (int i = 0; i < 3; ++i) {
          sched.step("writer:next");
          const std::uint64_t c = static_cast<std::uint64_t>(w * 2 + (i % 2));  // chunks 0-3
          if (bm.start_write(c * kChunk, 4096)) continue;
          {
            std::lock_guard lk(mu);
            issued.insert(c);
          }
          check_image(t.storage->durable_image());  // S2 at the moment of issue
          {
            std::lock_guard lk(mu);
            issued.erase(c);
          }
          bm.end_write(c * kChunk, 4096);
        }
      });
    }
    sched.spawn([&] {
      for (int i = 0; i < 3; ++i) {
        sched.step("daemon:next");
        clock.advance(1500ms);  // every page has been idle long enough
        if (i == 1)
          (void)bm.flush();
        else
          bm.run_daemon_once();
      }
    });
    r.steps = sched.run([&](const std::string& pt) {
      if (std::getenv("LLBM_DSCHED_TRACE") != nullptr) std::printf("  step at %s\n", pt.c_str());
      check_image(t.storage->durable_image());
    });
  }
  t.storage->set_sync_hook({});
  r.violations = violations.load();
  r.cleaned = bm.stats().pages_cleaned;
  r.timeouts = bm.stats().suspend_timeouts;
  return r;
}

int seeds() {
  const char* s = std::getenv("LLBM_DSCHED_SEEDS");
  if (s != nullptr && std::atoi(s) > 0) return std::atoi(s);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  return 300;
#else
  return 2000;
#endif
}

TEST(DeterministicScheduleTest, NoSeedViolatesWriteAhead) {
  const int n = seeds();
  std::size_t steps = 0;
  std::uint64_t cleaned = 0, timeouts = 0;
  for (int seed = 1; seed <= n; ++seed) {
    const SeedResult r = run_seed(static_cast<std::uint64_t>(seed));
    ASSERT_EQ(r.violations, 0) << "seed " << seed;
    steps += r.steps;
    cleaned += r.cleaned;
    timeouts += r.timeouts;
  }
  std::printf("dsched: %d seeds, %zu steps, %llu pages cleaned, %llu suspend timeouts\n", n, steps,
              static_cast<unsigned long long>(cleaned), static_cast<unsigned long long>(timeouts));
  EXPECT_GT(cleaned, 0u) << "no seed let the daemon clean: the race was not exercised";
  EXPECT_GT(timeouts, 0u) << "no seed made the daemon meet a write in flight";
}

TEST(DeterministicScheduleTest, FindsTheUpstreamMarkBeforeRaiseBug) {
  detail::test_hooks().mark_before_raise.store(true);
  int bad_seeds = 0, first_bad = 0;
  const int n = std::min(seeds(), 400);
  for (int seed = 1; seed <= n; ++seed) {
    if (run_seed(static_cast<std::uint64_t>(seed)).violations > 0) {
      if (bad_seeds++ == 0) first_bad = seed;
    }
  }
  detail::test_hooks().mark_before_raise.store(false);
  std::printf("dsched with mark-before-raise: %d of %d seeds violate write-ahead (first: %d)\n",
              bad_seeds, n, first_bad);
  EXPECT_GT(bad_seeds, 0) << "the scheduler did not find the upstream bug";
}

}  // namespace
}  // namespace llbitmap
