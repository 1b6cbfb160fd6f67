// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Forced interleavings of writer and daemon with sync points (docs/design.md#write-ahead-ordering).
//
// The mark-before-raise race fixed upstream in ef4ca3d4bf09: a writer that marks its
// chunk Dirty before it raises the page barrier can have the daemon clean the chunk in
// between; the writer's data is then issued under a durably Clean chunk. The test stops
// the writer between its two steps, runs a daemon pass, lets the writer finish, and
// checks the durable state at the moment start_write returns. With the library's order
// (raise, then mark) that state is Dirty; with the pre-fix order switched back on
// (a test hook), the same checker reports the violation.
#include <llbitmap/bitmap.h>
#include <llbitmap/page_barrier.h>
#include <llbitmap/testing/fault_storage.h>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "bitmap_fixture.h"
#include "start_gate.h"
#include "sync_point.h"

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kChunk = 64 << 10;

struct Outcome {
  std::optional<std::uint8_t> durable_at_return;
  std::error_code ec;
  BitmapStats stats{};
};

// A bitmap without a daemon thread, on a fake clock, idle after 5 s.
BitmapOptions fake_clock_options(FakeClock& clock, std::uint64_t device,
                                 std::chrono::milliseconds daemon_sleep) {
  BitmapOptions o;
  o.device_bytes = device;
  o.daemon_sleep = daemon_sleep;
  o.barrier_idle = 5000ms;
  o.start_daemon = false;
  o.clock = &clock;
  return o;
}

Outcome race_writer_against_daemon(bool mark_before_raise) {
  FakeClock clock;
  // daemon_sleep 50 ms: the daemon's patience with a write in flight.
  std::error_code ec;
  auto t = test::make_bitmap(fake_clock_options(clock, 64ull << 20, 50ms), ec);
  EXPECT_FALSE(ec);
  Bitmap& bm = *t.bitmap;
  // Page 0 was written long ago: it is expired and holds a Dirty chunk.
  EXPECT_FALSE(bm.start_write(0, 4096));
  bm.end_write(0, 4096);
  clock.advance(6000ms);

  detail::test_hooks().mark_before_raise.store(mark_before_raise);
  test::Flag at_point, go;
  const char* point = mark_before_raise ? "start_write:after_mark" : "start_write:after_raise";
  detail::SyncPoints::set(point, [&] {
    at_point.set();
    go.wait();
  });
  Outcome out;
  std::thread writer([&] {
    out.ec = bm.start_write(kChunk, 4096);  // chunk 1, page 0
    // The writer would issue its data now: what would a crash leave for chunk 1?
    out.durable_at_return = test::stored_states(t.storage->durable_image())[1];
  });
  at_point.wait();
  detail::SyncPoints::clear_all();
  // A forced pass (flush) lands between the writer's two steps. (An expiry-driven pass
  // would skip the page here: the writer's raise just pushed its expiry out.)
  (void)bm.flush();
  go.set();
  writer.join();
  detail::test_hooks().mark_before_raise.store(false);
  if (!out.ec) bm.end_write(kChunk, 4096);
  out.stats = bm.stats();
  return out;
}

TEST(InterleavingTest, RaiseBeforeMarkKeepsTheChunkDirtyThroughADaemonPass) {
  const Outcome out = race_writer_against_daemon(false);
  ASSERT_FALSE(out.ec);
  EXPECT_EQ(out.durable_at_return, std::optional<std::uint8_t>(2))
      << "data would be issued under a chunk that is not durably Dirty";
  // The race window was really hit: the daemon met the writer's reference and gave up.
  EXPECT_EQ(out.stats.suspend_timeouts, 1u);
  EXPECT_EQ(out.stats.pages_cleaned, 0u);
}

TEST(InterleavingTest, CheckerCatchesTheUpstreamMarkBeforeRaiseOrder) {
  const Outcome out = race_writer_against_daemon(true);
  ASSERT_FALSE(out.ec);
  EXPECT_EQ(out.durable_at_return, std::optional<std::uint8_t>(1))
      << "with the pre-fix order the daemon should have cleaned the chunk under the write";
  EXPECT_EQ(out.stats.pages_cleaned, 1u);
}

// The holders' allowance of a suspend starts only once the switch thread has dropped
// the reference it holds across the switch. It confirms the kill first (as the kernel
// does) and puts its reference after: a suspender that started its timeout at the
// confirmation gave up an idle page whenever the switch thread was preempted between the
// two steps for longer than the timeout (seen once in the differential test under load).
// The test holds the switch thread right after the confirmation and watches whether the
// suspender starts its allowance meanwhile; the bound on that watch is a watchdog, the
// order is what is checked.
TEST(InterleavingTest, SuspendAllowanceStartsAfterTheSwitchThreadsOwnReference) {
  PageBarrier page;
  test::Flag allowance_started;
  std::atomic<bool> started_while_held{false};
  std::atomic<int> holds{0};
  detail::SyncPoints::set("barrier:allowance_starts", [&] { allowance_started.set(); });
  detail::SyncPoints::set("switch:after_confirm", [&] {
    if (holds.fetch_add(1) != 0) return;
    // With the fix the suspender cannot get past wait_switch_done() while this thread is
    // held here, so the flag stays unset and the watchdog expires.
    if (allowance_started.wait_for(200ms)) started_while_held.store(true);
  });
  const bool ok = page.suspend(1ms);
  detail::SyncPoints::clear_all();
  EXPECT_FALSE(started_while_held.load())
      << "the allowance started while the switch thread still held its own reference";
  EXPECT_TRUE(ok) << "an idle page was given up";
  EXPECT_EQ(holds.load(), 1);
  if (ok) page.resume();
}

// Re-arming (docs/design.md#the-daemon: the daemon re-arms only while Dirty chunks remain). A pass
// that found no Dirty chunk left must not disarm the daemon over a chunk that turns Dirty while the
// pass decides: the writer's note_dirty() saw the daemon still armed and did not wake it, so a pass
// that then stores "disarmed" would leave that chunk Dirty until some other chunk turned Dirty (an
// idle crash would then need a resync). The test dirties a chunk on another page exactly between
// the pass's count and its decision.
TEST(InterleavingTest, ChunkDirtiedWhileAPassDecidesKeepsTheDaemonArmed) {
  FakeClock clock;
  std::error_code ec;
  auto t = test::make_bitmap(fake_clock_options(clock, 1ull << 30, 1000ms), ec);  // 5 pages
  ASSERT_FALSE(ec);
  Bitmap& bm = *t.bitmap;
  ASSERT_FALSE(bm.start_write(0, 4096));  // page 0
  bm.end_write(0, 4096);
  ASSERT_TRUE(bm.stats().daemon_armed);
  clock.advance(6000ms);

  const std::uint64_t page2 = bm.geometry().chunk_offset(bm.geometry().first_chunk_of_page(2));
  bool hit = false;
  detail::SyncPoints::set("daemon:after_rearm_check", [&] {
    if (hit) return;
    hit = true;
    // The pass cleaned page 0 and counted no Dirty chunk; now page 2 gets one.
    EXPECT_FALSE(bm.start_write(page2, 4096));
    bm.end_write(page2, 4096);
  });
  bm.run_daemon_once();
  detail::SyncPoints::clear_all();
  ASSERT_TRUE(hit);
  EXPECT_EQ(bm.state(0), ChunkState::kClean);
  EXPECT_EQ(bm.state(bm.geometry().chunk_of(page2)), ChunkState::kDirty);
  EXPECT_TRUE(bm.stats().daemon_armed)
      << "a Dirty chunk is left with the daemon disarmed: it would never be cleaned";

  // And the next pass, once the page has been idle, cleans it and disarms.
  clock.advance(6000ms);
  bm.run_daemon_once();
  EXPECT_EQ(bm.state(bm.geometry().chunk_of(page2)), ChunkState::kClean);
  EXPECT_FALSE(bm.stats().daemon_armed);
}

}  // namespace
}  // namespace llbitmap
