// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The reactor driver (reactor.h) under the seeded scheduler (docs/testing.md#seeded-schedules):
// two reactor threads, each with its own ReactorQueue, write to chunks of one page; an IO
// thread takes the metadata IO and completes it in a seeded random order; a step thread
// moves the clock and runs the cleaning pass (and one forced flush). One seed is one
// interleaving of the library's own code at its sync points. The oracle runs at every
// admission and inside every sync:
//   S2  a chunk whose write was admitted (kReady, or an admitting callback) and not yet
//       ended is Dirty or NeedSync in the durable image;
//   S1  no sync makes Clean or Unwritten durable for such a chunk.
// Liveness: every seed must end with every write admitted and ended and the bitmap closed,
// within a bounded number of steps of each thread.
// With the write-ahead rule switched off on purpose (admit_before_durable), some seeds
// must violate the oracle: the scheduler finds the bug on its own.
#include <llbitmap/reactor.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <vector>

#include "sync_point.h"
#include "sync_scheduler.h"

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kChunk = 64 << 10;

const std::vector<std::string> kPoints = {
    "reactor:after_raise", "reactor:after_mark",   "reactor:complete",      "reactor:before_settle",
    "reactor:after_kill",  "reactor:before_clean", "reactor:before_resume", "barrier:after_kill"};

// The bitmap file as the engine's disk holds it: writes land in `cache`, a sync copies
// the cache to `durable`.
struct Disk {
  std::mutex mu;
  std::vector<std::byte> cache, durable;
};

struct SeedResult {
  int violations = 0;
  bool live = true;
  int refused = 0;  // writes refused with an error: none is injected, so none may be
  std::size_t steps = 0;
  std::uint64_t cleaned = 0, pending = 0;
};

bool dirty_like(std::byte b) {
  return b == std::byte{2} || b == std::byte{3};  // Dirty, NeedSync
}

SeedResult run_seed(std::uint64_t seed) {
  FakeClock clock;
  BitmapOptions o;
  o.device_bytes = 64ull << 20;  // 1024 chunks: one page, one block
  o.space_bytes = 4096;
  o.daemon_sleep = 4ms;
  o.barrier_idle = 1000ms;
  std::error_code ec;
  Disk disk;
  disk.cache = ReactorBitmap::format(o, ec);
  disk.durable = disk.cache;
  ReactorOptions ro;
  ro.clock = &clock;
  ro.data_flush = true;
  // Odd seeds: a round's sync comes behind its writes in one next_ios() call
  // (after_writes), and the engine completes it only once they have.
  ro.ordered_sync = seed % 2 == 1;
  // Seeds 2, 3, 6, 7, ...: the next round may begin while a round's sync is outstanding.
  ro.pipelined_rounds = seed / 2 % 2 == 1;
  auto bm = ReactorBitmap::open(disk.durable, ro, ec);
  EXPECT_TRUE(bm != nullptr) << ec.message();
  const Geometry geo = bm->geometry();

  std::mutex mu;
  std::multiset<std::uint64_t> issued;  // guarded by mu
  std::atomic<int> violations{0};
  std::atomic<int> refused{0};
  auto check = [&](const std::vector<std::byte>& img) {
    std::lock_guard lk(mu);
    for (std::uint64_t c : issued)
      if (!dirty_like(img[geo.chunk_pos(c)])) violations.fetch_add(1);
  };
  auto check_durable = [&] {
    std::vector<std::byte> img;
    {
      std::lock_guard lk(disk.mu);
      img = disk.durable;
    }
    check(img);
  };

  SeedResult r;
  std::atomic<int> writers_left{2};
  std::atomic<bool> live{true};
  constexpr int kCap = 4000;  // turns of a looping thread before the seed counts as stuck
  {
    test::SyncScheduler sched(seed, kPoints, 2ms);
    for (int w = 0; w < 2; ++w) {
      sched.spawn([&, w] {
        ReactorQueue q(*bm);
        for (int i = 0; i < 3; ++i) {
          sched.step("writer:next");
          const std::uint64_t c = static_cast<std::uint64_t>(w * 2 + (i % 2));  // chunks 0-3
          // The callback runs from q.poll() on this thread: a thread_local reaches it.
          static thread_local int result = 0;  // 0 waiting, 1 admitted, 2 refused
          result = 0;
          ReactorWrite rw(+[](ReactorWrite&, std::error_code e) { result = e ? 2 : 1; });
          std::error_code wec;  // this writer's own: the other writer runs concurrently
          const Admit a = q.start_write(c * kChunk, 4096, rw, wec);
          int turns = 0;
          if (a == Admit::kPending) {
            while (result == 0 && ++turns < kCap) {
              sched.step("writer:poll");
              q.poll();
            }
            if (result == 0) {
              live = false;
              // Leave nothing pending behind: the seed failed anyway.
              while (rw.pending()) q.poll();
            }
          }
          const bool admitted = a == Admit::kReady || (a == Admit::kPending && result == 1);
          if (!admitted) {
            if (a == Admit::kRefused || result == 2) refused.fetch_add(1);
            continue;
          }
          {
            std::lock_guard lk(mu);
            issued.insert(c);
          }
          check_durable();  // S2 at the moment of issue
          sched.step("writer:issued");
          {
            std::lock_guard lk(mu);
            issued.erase(issued.find(c));
          }
          bm->end_write(c * kChunk, 4096);
        }
        writers_left.fetch_sub(1);
      });
    }
    // The engine's IO: completes what it took in a seeded order.
    sched.spawn([&] {
      std::mt19937_64 rng(seed * 7919 + 1);
      std::vector<MetaIo> taken;
      ReactorBitmap::CloseState cs = ReactorBitmap::CloseState::kOpen;
      std::error_code cec;
      for (int turn = 0; turn < kCap; ++turn) {
        sched.step("io:next");
        if (ro.ordered_sync) {
          std::array<MetaIo, 8> batch;
          for (std::size_t n; (n = bm->next_ios(batch)) != 0;)
            taken.insert(taken.end(), batch.begin(),
                         batch.begin() + static_cast<std::ptrdiff_t>(n));
        } else {
          MetaIo io;
          while (bm->next_io(io)) taken.push_back(io);
        }
        if (taken.empty()) {
          cs = bm->close_state(cec);
          if (cs == ReactorBitmap::CloseState::kClosed) break;
          continue;
        }
        std::size_t k = rng() % taken.size();
        if (taken[k].after_writes) {
          // Not before the writes it follows: every kWrite outstanding is one of them.
          for (std::size_t i = 0; i < taken.size(); ++i)
            if (taken[i].kind == MetaIo::Kind::kWrite) {
              k = i;
              break;
            }
        }
        const MetaIo one = taken[k];
        taken.erase(taken.begin() + static_cast<std::ptrdiff_t>(k));
        if (one.kind == MetaIo::Kind::kWrite) {
          std::lock_guard lk(disk.mu);
          std::memcpy(disk.cache.data() + one.offset, one.bytes.data(), one.bytes.size());
        } else if (one.kind == MetaIo::Kind::kSync) {
          std::vector<std::byte> img;
          {
            std::lock_guard lk(disk.mu);
            disk.durable = disk.cache;
            img = disk.durable;
          }
          check(img);  // S1 inside the sync
        }
        bm->complete(one.id, {});
      }
      if (bm->close_state(cec) != ReactorBitmap::CloseState::kClosed) live = false;
      // Leave no IO outstanding for the destructor's check.
      for (const MetaIo& io : taken) bm->complete(io.id, {});
    });
    // The cleaning pass; closes once the writers are done.
    sched.spawn([&] {
      bool close_asked = false;
      for (int turn = 0; turn < kCap; ++turn) {
        sched.step("step:next");
        std::error_code cec;
        if (bm->close_state(cec) == ReactorBitmap::CloseState::kClosed) break;
        clock.advance(1500ms);  // every page is idle long enough, every pass is due
        if (turn == 3) bm->begin_flush();
        if (writers_left.load() == 0 && !close_asked) {
          bm->begin_close();
          close_asked = true;
        }
        if (close_asked && bm->close_state(cec) == ReactorBitmap::CloseState::kOpen &&
            cec == Errc::busy)
          bm->begin_close();
        bm->step();
      }
    });
    r.steps = sched.run([&](const std::string&) { check_durable(); });
  }
  r.violations = violations.load();
  r.refused = refused.load();
  r.live = live.load();
  r.cleaned = bm->stats().pages_cleaned;
  r.pending = bm->stats().pending_persist + bm->stats().pending_page;
  return r;
}

int seeds() {
  const char* s = std::getenv("LLBM_DSCHED_SEEDS");
  if (s != nullptr && std::atoi(s) > 0) return std::atoi(s);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  return 150;
#else
  return 600;
#endif
}

TEST(ReactorScheduleTest, NoSeedViolatesWriteAheadAndEverySeedFinishes) {
  const int n = seeds();
  std::size_t steps = 0;
  std::uint64_t cleaned = 0, pending = 0;
  for (int seed = 1; seed <= n; ++seed) {
    const SeedResult r = run_seed(static_cast<std::uint64_t>(seed));
    ASSERT_EQ(r.violations, 0) << "seed " << seed;
    ASSERT_EQ(r.refused, 0) << "seed " << seed << ": a write was refused with an error";
    ASSERT_TRUE(r.live) << "seed " << seed << ": a write or the close did not finish";
    steps += r.steps;
    cleaned += r.cleaned;
    pending += r.pending;
  }
  std::printf("reactor dsched: %d seeds, %zu steps, %llu pages cleaned, %llu pending admissions\n",
              n, steps, static_cast<unsigned long long>(cleaned),
              static_cast<unsigned long long>(pending));
  EXPECT_GT(cleaned, 0u) << "no seed let the pass clean: the race was not exercised";
  EXPECT_GT(pending, 0u) << "no write ever waited: admission was not exercised";
}

TEST(ReactorScheduleTest, FindsAdmissionBeforeDurable) {
  detail::test_hooks().admit_before_durable.store(true);
  int bad_seeds = 0, first_bad = 0;
  const int n = std::min(seeds(), 200);
  for (int seed = 1; seed <= n; ++seed) {
    if (run_seed(static_cast<std::uint64_t>(seed)).violations > 0) {
      if (bad_seeds++ == 0) first_bad = seed;
    }
  }
  detail::test_hooks().admit_before_durable.store(false);
  std::printf(
      "reactor dsched with admit-before-durable: %d of %d seeds violate write-ahead "
      "(first: %d)\n",
      bad_seeds, n, first_bad);
  EXPECT_GT(bad_seeds, 0) << "the scheduler did not find the broken admission";
}

}  // namespace
}  // namespace llbitmap
