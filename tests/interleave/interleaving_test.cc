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

// A write over two pages against a pass that killed both (docs/design.md#page-barrier):
// the writer holds page 0 and reaches page 1 only after the pass killed pages 0 and 1. A
// writer that waited for page 1 while holding page 0 would wait for a pass that waits for
// page 0 to drain, until daemon_sleep (1 h here: the test's ctest TIMEOUT fails it first)
// gives page 0 up. Both must finish at once, and the pass must clean both pages.
TEST(InterleavingTest, TwoPageWriteAndAPassThatKilledBothPagesDoNotWaitForEachOther) {
  FakeClock clock;
  std::error_code ec;
  auto t = test::make_bitmap(fake_clock_options(clock, 1ull << 30, std::chrono::hours(1)), ec);
  ASSERT_FALSE(ec);
  Bitmap& bm = *t.bitmap;
  const std::uint64_t c1 = bm.geometry().first_chunk_of_page(1);
  const std::uint64_t off = bm.geometry().chunk_offset(c1 - 1);  // chunks c1-1 and c1
  const std::uint64_t len = 2 * kChunk;
  ASSERT_EQ(bm.geometry().page_of_chunk(c1 - 1), 0u);
  ASSERT_FALSE(bm.start_write(off, len));  // both pages hold a Dirty chunk
  bm.end_write(off, len);

  test::Flag holds_page0, killed;
  std::atomic<int> at_next_page{0}, kills{0};
  detail::SyncPoints::set("raise_range:next_page", [&] {
    if (at_next_page.fetch_add(1) != 0) return;
    holds_page0.set();
    killed.wait();
  });
  detail::SyncPoints::set("barrier:after_kill", [&] {
    if (kills.fetch_add(1) == 0) killed.set();
  });
  std::error_code write_ec, flush_ec;
  std::thread writer([&] { write_ec = bm.start_write(off, len); });
  holds_page0.wait();
  std::thread flusher([&] { flush_ec = bm.flush(); });
  writer.join();
  flusher.join();
  detail::SyncPoints::clear_all();
  ASSERT_FALSE(write_ec);
  EXPECT_FALSE(flush_ec);
  const BitmapStats st = bm.stats();
  EXPECT_EQ(st.suspend_timeouts, 0u) << "the pass gave a page up: the writer held it";
  EXPECT_EQ(st.pages_cleaned, 2u);
  EXPECT_GE(st.raise_waits, 1u) << "the writer never met the killed page: not exercised";
  EXPECT_EQ(bm.state(c1 - 1), ChunkState::kDirty);  // marked after the pass, write in flight
  EXPECT_EQ(bm.state(c1), ChunkState::kDirty);
  bm.end_write(off, len);
  EXPECT_FALSE(bm.flush());
  EXPECT_EQ(bm.counts().dirty, 0u);
}

// An end_sync or close_sync that turns a chunk Dirty while a pass holds its page suspended,
// after the pass has looked at the page for the last time: its expire_now() must survive
// the pass's resume, so that the next pass cleans the chunk (an idle crash then needs no
// resync). The daemon would otherwise stay armed and find nothing to do on every wake-up.
void end_sync_during_pass(bool close_sync) {
  FakeClock clock;
  std::error_code ec;
  auto t = test::make_bitmap(fake_clock_options(clock, 64ull << 20, 1000ms), ec);
  ASSERT_FALSE(ec);
  Bitmap& bm = *t.bitmap;
  bm.set_degraded(true);  // chunk 1 NeedSync, then Syncing
  ASSERT_FALSE(bm.start_write(kChunk, 4096));
  bm.end_write(kChunk, 4096);
  bm.set_degraded(false);
  ASSERT_TRUE(bm.start_sync(kChunk));
  ASSERT_FALSE(bm.start_write(0, 4096));  // chunk 0 Dirty: page 0 is a candidate
  bm.end_write(0, 4096);
  clock.advance(6000ms);

  bool hit = false;
  detail::SyncPoints::set("daemon:reopen_checked", [&] {
    if (hit) return;
    hit = true;
    if (close_sync)
      bm.close_sync();
    else
      bm.end_sync(kChunk);
  });
  bm.run_daemon_once();
  detail::SyncPoints::clear_all();
  ASSERT_TRUE(hit);
  EXPECT_EQ(bm.state(0), ChunkState::kClean);
  ASSERT_EQ(bm.state(1), ChunkState::kDirty);
  EXPECT_TRUE(bm.stats().daemon_armed);

  clock.advance(6000ms);
  bm.run_daemon_once();
  EXPECT_EQ(bm.counts().dirty, 0u) << "the resume undid the page's expire_now()";
  EXPECT_EQ(test::stored_states(t.storage->durable_image())[1], std::optional<std::uint8_t>(1));
  EXPECT_FALSE(bm.stats().daemon_armed);
}

TEST(InterleavingTest, EndSyncWhileAPassHoldsThePageIsCleanedByTheNextPass) {
  end_sync_during_pass(false);
}

TEST(InterleavingTest, CloseSyncWhileAPassHoldsThePageIsCleanedByTheNextPass) {
  end_sync_during_pass(true);
}

// set_daemon_sleep: a shorter period applies to the sleep in progress. The daemon thread
// is asleep for 24 h with a Dirty, idle chunk; set_daemon_sleep(1 ms) must make it clean the
// chunk now, not after the old period (the wait below would then hang until the test's
// ctest TIMEOUT fails it).
TEST(InterleavingTest, ShorterDaemonSleepEndsTheSleepInProgress) {
  test::Flag asleep;  // outlives the bitmap: its daemon thread reaches the point
  detail::SyncPoints::set("daemon:sleep", [&] { asleep.set(); });
  {
    FakeClock clock;
    BitmapOptions o = fake_clock_options(clock, 64ull << 20, std::chrono::hours(24));
    o.start_daemon = true;
    std::error_code ec;
    auto t = test::make_bitmap(o, ec);
    ASSERT_FALSE(ec);
    Bitmap& bm = *t.bitmap;
    ASSERT_FALSE(bm.start_write(0, 4096));  // arms the daemon: it starts a 24 h sleep
    bm.end_write(0, 4096);
    asleep.wait();
    clock.advance(6000ms);  // page 0 is idle
    // The daemon thread holds its lock from the point until it waits, and the wake-up
    // below takes that lock: the notification reaches the sleep.
    ASSERT_FALSE(bm.set_daemon_sleep(1ms));
    test::spin_until([&] { return bm.counts().dirty == 0; });
    EXPECT_EQ(bm.state(0), ChunkState::kClean);
    EXPECT_FALSE(bm.close());
  }
  detail::SyncPoints::clear_all();
}

}  // namespace
}  // namespace llbitmap
