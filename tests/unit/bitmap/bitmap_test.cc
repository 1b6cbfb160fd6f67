// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Bitmap: the write path, write-ahead persistence (S1-S3, S5), the daemon, crash
// recovery on open (S4), resync calls, degraded mode, close.
#include <llbitmap/bitmap.h>
#include <llbitmap/testing/fault_storage.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "bitmap_fixture.h"
#include "start_gate.h"

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
using test::stored_states;

constexpr std::uint64_t kChunk = 64 << 10;
constexpr std::uint8_t kU = 0, kC = 1, kD = 2, kN = 3, kS = 4;

class BitmapTest : public ::testing::Test {
 protected:
  BitmapOptions options(std::uint64_t device = 1ull << 30) {
    BitmapOptions o;
    o.device_bytes = device;  // 1 GiB: 16384 chunks of 64 KiB, 5 pages
    o.daemon_sleep = 50ms;    // also the suspend timeout
    o.barrier_idle = 5000ms;
    o.start_daemon = false;
    o.clock = &clock_;
    return o;
  }
  void make(BitmapOptions o) {
    std::error_code ec;
    t_ = test::make_bitmap(std::move(o), ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(t_.bitmap);
  }
  // Hooks capture the test body's locals: remove them before the fixture closes the
  // bitmap (close persists, which would run them).
  void TearDown() override {
    if (t_.storage != nullptr) {
      t_.storage->set_sync_hook({});
      t_.storage->set_write_hook({});
    }
  }
  // Destroys the bitmap now (and forgets its storage, which it owned).
  void destroy() {
    t_.bitmap.reset();
    t_.storage = nullptr;
  }
  Bitmap& bm() { return *t_.bitmap; }
  FaultStorage& st() { return *t_.storage; }
  // The first sync of the bitmap file that finds `hold` set clears it, sets `in_sync` and
  // waits for `release_sync`: the test then acts while that persist is in flight. The
  // hook refers to the three objects, which the test body keeps alive (TearDown removes
  // it).
  void hold_one_sync(std::atomic<bool>& hold, test::Flag& in_sync, test::Flag& release_sync) {
    st().set_sync_hook([&hold, &in_sync, &release_sync](const SyncEvent&) -> std::error_code {
      if (hold.exchange(false)) {
        in_sync.set();
        release_sync.wait();
      }
      return {};
    });
  }
  std::optional<std::uint8_t> durable(std::uint64_t chunk) {
    return stored_states(st().durable_image()).at(chunk);
  }
  // Passes barrier_idle on the fake clock and runs one daemon pass.
  void idle_and_clean() {
    clock_.advance(5001ms);
    bm().run_daemon_once();
  }

  FakeClock clock_;
  test::BitmapUnderTest t_;
};

TEST_F(BitmapTest, CreateGivesTheKernelGeometry) {
  make(options());
  EXPECT_EQ(bm().chunk_bytes(), kChunk);
  EXPECT_EQ(bm().chunks(), 16384u);
  const StateCounts n = bm().counts();
  EXPECT_EQ(n.unwritten, 16384u);
  EXPECT_EQ(n.clean + n.dirty + n.need_sync + n.syncing, 0u);
}

TEST_F(BitmapTest, AutoChunkSizeDoublesUntilTheChunksFit) {
  BitmapOptions o = options(64ull << 30);  // 64 GiB / 64 KiB = 1 Mi chunks > 127 Ki
  make(o);
  EXPECT_EQ(bm().chunk_bytes(), 1u << 20);  // 64 Ki chunks + 1024 <= 128 KiB
  EXPECT_LE(bm().chunks() + 1024, 128u << 10);
}

TEST_F(BitmapTest, AssumeCleanStartsClean) {
  BitmapOptions o = options();
  o.assume_clean = true;
  make(o);
  EXPECT_EQ(bm().counts().clean, bm().chunks());
}

TEST_F(BitmapTest, BadRangesAreRefusedAndMarkNothing) {
  make(options());
  const auto writes_before = st().counters().writes;
  EXPECT_EQ(bm().start_write(0, 0), std::errc::invalid_argument);
  EXPECT_EQ(bm().start_write(1ull << 30, 1), std::errc::invalid_argument);
  EXPECT_EQ(bm().start_write((1ull << 30) - 10, 11), std::errc::invalid_argument);
  EXPECT_EQ(bm().start_write(UINT64_MAX, 2), std::errc::invalid_argument);
  EXPECT_EQ(bm().start_discard(0, 0), std::errc::invalid_argument);
  EXPECT_EQ(bm().counts().unwritten, bm().chunks());
  EXPECT_EQ(st().counters().writes, writes_before);
}

TEST_F(BitmapTest, IntervalsOutOfRangeAreInvalidArguments) {
  BitmapOptions o = options();
  o.daemon_sleep = 0ms;
  std::error_code ec;
  auto t = test::make_bitmap(o, ec);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_FALSE(t.bitmap);
  o.daemon_sleep = 25h;
  t = test::make_bitmap(o, ec);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  make(options());
  EXPECT_EQ(bm().set_barrier_idle(0ms), std::errc::invalid_argument);
  EXPECT_EQ(bm().set_daemon_sleep(25h), std::errc::invalid_argument);
  EXPECT_FALSE(bm().set_barrier_idle(1ms));
  EXPECT_EQ(bm().barrier_idle(), 1ms);
}

TEST_F(BitmapTest, StartWriteReturnsOnlyWhenDirtyIsDurable) {
  make(options());
  ASSERT_EQ(durable(5), kU);
  ASSERT_FALSE(bm().start_write(5 * kChunk + 100, 4096));
  EXPECT_EQ(bm().state(5), ChunkState::kDirty);
  EXPECT_EQ(durable(5), kD) << "start_write returned before Dirty was durable";
  EXPECT_TRUE(st().unsynced_writes().empty());
  bm().end_write(5 * kChunk + 100, 4096);
}

TEST_F(BitmapTest, WriteAheadOrderHoldsAtEverySync) {
  // The oracle runs inside the storage at the moment of each sync: every chunk whose
  // write was issued (start_write returned, end_write not called) is Dirty or NeedSync in
  // the image the sync makes durable.
  make(options());
  std::mutex mu;
  std::set<std::uint64_t> issued;
  std::atomic<int> violations{0}, syncs{0};
  st().set_sync_hook([&](const SyncEvent& ev) -> std::error_code {
    std::vector<std::byte> img(ev.durable_image.begin(), ev.durable_image.end());
    for (const PendingWrite& w : ev.pending)
      std::copy(w.data.begin(), w.data.end(), img.begin() + static_cast<std::ptrdiff_t>(w.offset));
    const auto states = stored_states(img);
    std::lock_guard lk(mu);
    for (std::uint64_t c : issued) {
      if (!states[c] || (*states[c] != kD && *states[c] != kN)) violations.fetch_add(1);
    }
    syncs.fetch_add(1);
    return {};
  });
  for (std::uint64_t round = 0; round < 50; ++round) {
    const std::uint64_t c = (round * 7919) % bm().chunks();
    ASSERT_FALSE(bm().start_write(c * kChunk, kChunk));
    {
      std::lock_guard lk(mu);
      issued.insert(c);
    }
    if (round % 3 == 0) {
      {
        std::lock_guard lk(mu);
        issued.erase(c);
      }
      bm().end_write(c * kChunk, kChunk);
      idle_and_clean();
    }
  }
  for (std::uint64_t c : std::set<std::uint64_t>(issued)) bm().end_write(c * kChunk, kChunk);
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(syncs.load(), 30);
}

TEST_F(BitmapTest, RewritingADirtyChunkDoesNoIO) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 512));
  bm().end_write(0, 512);
  const auto before = st().counters();
  for (int i = 0; i < 100; ++i) {
    ASSERT_FALSE(bm().start_write(100, 512));
    bm().end_write(100, 512);
  }
  EXPECT_EQ(st().counters().writes, before.writes);
  EXPECT_EQ(st().counters().syncs, before.syncs);
}

TEST_F(BitmapTest, WriteGuardEndsTheWrite) {
  make(options());
  std::error_code ec;
  {
    WriteGuard g = bm().guard_write(0, 4096, ec);
    ASSERT_FALSE(ec);
    ASSERT_TRUE(g);
    EXPECT_EQ(bm().close(), Errc::busy);  // the guard holds the page
  }
  WriteGuard bad = bm().guard_write(0, 0, ec);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_FALSE(bad);
  EXPECT_FALSE(bm().close());
}

TEST_F(BitmapTest, DaemonCleansOnlyAfterBarrierIdle) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  clock_.advance(4000ms);
  bm().run_daemon_once();
  EXPECT_EQ(bm().state(0), ChunkState::kDirty);
  clock_.advance(1001ms);
  bm().run_daemon_once();
  EXPECT_EQ(bm().state(0), ChunkState::kClean);
  EXPECT_EQ(durable(0), kC) << "an idle crash must need no resync";
  EXPECT_EQ(bm().stats().pages_cleaned, 1u);
}

TEST_F(BitmapTest, DataFlushHookRunsBeforeCleanIsPersisted) {
  BitmapOptions o = options();
  std::atomic<int> flushes{0};
  std::atomic<std::uint64_t> durable_clean_before_flush{0};
  FaultStorage* storage = nullptr;
  o.data_flush = [&]() -> std::error_code {
    // Clean must not be durable yet when the engine is asked to flush its data.
    if (storage != nullptr && stored_states(storage->durable_image())[0] == kC)
      durable_clean_before_flush.fetch_add(1);
    flushes.fetch_add(1);
    return {};
  };
  make(o);
  storage = t_.storage;
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  idle_and_clean();
  EXPECT_EQ(flushes.load(), 1);
  EXPECT_EQ(durable_clean_before_flush.load(), 0u);
  EXPECT_EQ(durable(0), kC);
  EXPECT_FALSE(bm().close());  // the hook captures locals of this body
}

TEST_F(BitmapTest, FailingDataFlushKeepsTheChunksDirty) {
  BitmapOptions o = options();
  o.data_flush = [] { return std::make_error_code(std::errc::io_error); };
  make(o);
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  idle_and_clean();
  EXPECT_EQ(bm().state(0), ChunkState::kDirty);
  EXPECT_EQ(durable(0), kD);
  ASSERT_FALSE(bm().start_write(0, 4096));  // the page was resumed
  bm().end_write(0, 4096);
}

// A pass whose data flush failed resumes its pages with their chunks still Dirty; they
// must stay candidates, so that the first pass after the flush works again cleans them
// (an idle crash then needs no resync).
TEST_F(BitmapTest, ChunksAFailedDataFlushLeftDirtyAreCleanedOnceTheFlushWorks) {
  BitmapOptions o = options();
  std::atomic<bool> fail{true};
  o.data_flush = [&]() -> std::error_code {
    return fail.load() ? std::make_error_code(std::errc::io_error) : std::error_code{};
  };
  make(o);
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  idle_and_clean();
  ASSERT_EQ(bm().state(0), ChunkState::kDirty);
  fail.store(false);
  idle_and_clean();
  EXPECT_EQ(bm().counts().dirty, 0u) << "the page was resumed as never expiring";
  EXPECT_EQ(durable(0), kC);
  EXPECT_FALSE(bm().close());  // the hook captures locals of this body
}

// A busy close() resumes the pages it did suspend; those holding Dirty chunks must still
// be cleaned by the daemon, as the bitmap stays open and usable.
TEST_F(BitmapTest, DirtyPagesABusyCloseReopenedAreCleanedByTheNextPass) {
  make(options());
  const std::uint64_t page1 = bm().geometry().chunk_offset(bm().geometry().first_chunk_of_page(1));
  ASSERT_FALSE(bm().start_write(page1, 4096));  // page 1: an idle Dirty chunk
  bm().end_write(page1, 4096);
  ASSERT_FALSE(bm().start_write(0, 4096));  // page 0: a write in flight
  ASSERT_EQ(bm().close(), Errc::busy);
  bm().end_write(0, 4096);
  idle_and_clean();
  EXPECT_EQ(bm().counts().dirty, 0u) << "a page close() reopened was never cleaned";
  EXPECT_EQ(durable(bm().geometry().chunk_of(page1)), kC);
}

TEST_F(BitmapTest, SuspendTimeoutDuringALongWriteKeepsThePageDirtyAndOpen) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));  // a long write: never ended during the pass
  idle_and_clean();                         // suspend times out after daemon_sleep
  EXPECT_EQ(bm().state(0), ChunkState::kDirty);
  EXPECT_EQ(durable(0), kD);
  EXPECT_EQ(bm().stats().suspend_timeouts, 1u);
  // The page is open: a new write on it does not hang.
  ASSERT_FALSE(bm().start_write(kChunk, 4096));
  bm().end_write(kChunk, 4096);
  bm().end_write(0, 4096);
  idle_and_clean();
  EXPECT_EQ(bm().state(0), ChunkState::kClean);
}

TEST_F(BitmapTest, CrashWithAWriteInFlightReopensAsNeedSync) {
  make(options());
  ASSERT_FALSE(bm().start_write(3 * kChunk, 2 * kChunk));  // chunks 3 and 4, in flight
  ASSERT_FALSE(bm().start_write(4000 * kChunk, 4096));     // page 1
  bm().end_write(4000 * kChunk, 4096);
  const std::vector<std::byte> crash = st().durable_image();  // power cut now
  bm().end_write(3 * kChunk, 2 * kChunk);
  std::error_code ec;
  auto re = test::reopen(crash, ec);
  ASSERT_TRUE(re) << ec.message();
  EXPECT_EQ(re->state(3), ChunkState::kNeedSync);
  EXPECT_EQ(re->state(4), ChunkState::kNeedSync);
  EXPECT_EQ(re->state(4000), ChunkState::kNeedSync);
  EXPECT_EQ(re->state(5), ChunkState::kUnwritten);
  const auto runs = re->needs_sync();
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], std::make_pair(3 * kChunk, 2 * kChunk));
  EXPECT_EQ(runs[1], std::make_pair(4000 * kChunk, kChunk));
}

// A pass walks a page block by block and stops once the page's Dirty count is zero:
// Dirty chunks at both ends of a page, in several blocks (512-byte blocks: 8 per page),
// and a write spanning a block boundary are all cleaned and persisted, and nothing else
// changes.
TEST_F(BitmapTest, DaemonCleansDirtyChunksAnywhereInAPage) {
  BitmapOptions o = options();
  o.block_bytes = 512;
  make(o);
  const Geometry& g = bm().geometry();
  const ChunkRange page1 = g.chunks_in_page(1);
  const std::vector<std::uint64_t> chunks = {0,           511,           512,
                                             page1.first, page1.end - 1, g.chunks() - 1};
  for (std::uint64_t c : chunks) {
    ASSERT_FALSE(bm().start_write(c * kChunk, 4096));
    bm().end_write(c * kChunk, 4096);
  }
  // One write across the boundary of two blocks (chunks 1535 and 1536).
  ASSERT_FALSE(bm().start_write(1535 * kChunk, 2 * kChunk));
  bm().end_write(1535 * kChunk, 2 * kChunk);
  EXPECT_EQ(bm().counts().dirty, chunks.size() + 2);
  EXPECT_TRUE(bm().stats().daemon_armed);
  idle_and_clean();
  EXPECT_EQ(bm().counts().dirty, 0u);
  EXPECT_EQ(bm().counts().clean, chunks.size() + 2);
  EXPECT_FALSE(bm().stats().daemon_armed) << "no Dirty chunk left: the daemon may sleep";
  const std::vector<std::optional<std::uint8_t>> stored = stored_states(st().durable_image());
  std::uint64_t clean = 0;
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    ASSERT_TRUE(stored.at(c).has_value()) << "chunk " << c;
    ASSERT_TRUE(*stored.at(c) == kU || *stored.at(c) == kC) << "chunk " << c;
    clean += *stored.at(c) == kC ? 1 : 0;
  }
  EXPECT_EQ(clean, chunks.size() + 2) << "every cleaned chunk is durable as Clean";
}

// The daemon stays armed while any Dirty chunk remains (a page not yet idle), and only
// then.
TEST_F(BitmapTest, DaemonStaysArmedWhileDirtyChunksRemain) {
  make(options());
  EXPECT_FALSE(bm().stats().daemon_armed);
  ASSERT_FALSE(bm().start_write(0, 4096));  // page 0
  bm().end_write(0, 4096);
  clock_.advance(3000ms);
  const std::uint64_t late = bm().geometry().first_chunk_of_page(3) * kChunk;
  ASSERT_FALSE(bm().start_write(late, 4096));  // page 3, written 3 s later
  bm().end_write(late, 4096);
  clock_.advance(2001ms);  // page 0 idle, page 3 not
  bm().run_daemon_once();
  EXPECT_EQ(bm().state(0), ChunkState::kClean);
  EXPECT_EQ(bm().counts().dirty, 1u);
  EXPECT_TRUE(bm().stats().daemon_armed);
  clock_.advance(3000ms);
  bm().run_daemon_once();
  EXPECT_EQ(bm().counts().dirty, 0u);
  EXPECT_FALSE(bm().stats().daemon_armed);
}

TEST_F(BitmapTest, IdleCrashNeedsNoResync) {
  make(options());
  for (std::uint64_t c : {1ull, 2000ull, 9000ull}) {
    ASSERT_FALSE(bm().start_write(c * kChunk, 100));
    bm().end_write(c * kChunk, 100);
  }
  idle_and_clean();
  std::error_code ec;
  auto re = test::reopen(st().durable_image(), ec);
  ASSERT_TRUE(re) << ec.message();
  EXPECT_TRUE(re->needs_sync().empty());
  EXPECT_EQ(re->counts().clean, 3u);
}

TEST_F(BitmapTest, ResyncCycle) {
  make(options());
  ASSERT_FALSE(bm().start_write(10 * kChunk, 4096));
  const std::vector<std::byte> crash = st().durable_image();
  bm().end_write(10 * kChunk, 4096);
  std::error_code ec;
  FaultStorage* rs = nullptr;
  auto re = test::reopen(crash, ec, &rs);
  ASSERT_TRUE(re);
  EXPECT_FALSE(re->start_sync(11 * kChunk)) << "an Unwritten chunk needs no copy";
  ASSERT_TRUE(re->start_sync(10 * kChunk));
  EXPECT_EQ(re->state(10), ChunkState::kSyncing);
  re->abort_sync(10 * kChunk);
  EXPECT_EQ(re->state(10), ChunkState::kNeedSync);
  ASSERT_TRUE(re->start_sync(10 * kChunk));
  re->end_sync(10 * kChunk);
  EXPECT_EQ(re->state(10), ChunkState::kDirty);
  re->run_daemon_once();  // end_sync expired the page
  EXPECT_EQ(re->state(10), ChunkState::kClean);
  EXPECT_TRUE(re->needs_sync().empty());
  EXPECT_EQ(stored_states(rs->durable_image())[10], kC);
}

// md resyncs everything when its bitmap is disabled; a failed bitmap changes no chunk
// any more and reopens with every written chunk NeedSync. So start_sync answers true
// for every written chunk (Clean, Dirty, NeedSync) and false only for Unwritten ones.
TEST_F(BitmapTest, StartSyncOnAFailedBitmapCopiesEveryWrittenChunk) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  idle_and_clean();  // chunk 0 Clean
  ASSERT_FALSE(bm().start_write(kChunk, 4096));
  bm().end_write(kChunk, 4096);  // chunk 1 Dirty
  st().fail_sync(1);
  EXPECT_EQ(bm().start_write(7 * kChunk, 4096), std::errc::io_error);
  ASSERT_TRUE(bm().failed());
  EXPECT_TRUE(bm().start_sync(0)) << "Clean";
  EXPECT_TRUE(bm().start_sync(kChunk)) << "Dirty";
  EXPECT_TRUE(bm().start_sync(7 * kChunk)) << "marked before the failed persist";
  EXPECT_FALSE(bm().start_sync(100 * kChunk)) << "Unwritten: never written";
  EXPECT_EQ(bm().state(0), ChunkState::kClean) << "a failed bitmap changes no chunk";
  bm().end_sync(0);
  EXPECT_EQ(bm().state(0), ChunkState::kClean);
}

TEST_F(BitmapTest, CloseSyncEndsEverySyncAndExpiresThePages) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  const std::vector<std::byte> crash = st().durable_image();
  bm().end_write(0, 4096);
  std::error_code ec;
  auto re = test::reopen(crash, ec);
  ASSERT_TRUE(re);
  ASSERT_TRUE(re->start_sync(0));
  re->close_sync();
  EXPECT_EQ(re->state(0), ChunkState::kDirty);
  re->run_daemon_once();
  EXPECT_EQ(re->state(0), ChunkState::kClean);
}

TEST_F(BitmapTest, DiscardTurnsFullyCoveredChunksUnwritten) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4 * kChunk));
  bm().end_write(0, 4 * kChunk);
  ASSERT_FALSE(bm().start_discard(kChunk / 2, 3 * kChunk));  // covers chunks 1 and 2 fully
  bm().end_discard(kChunk / 2, 3 * kChunk);
  EXPECT_EQ(bm().state(0), ChunkState::kDirty);
  EXPECT_EQ(bm().state(1), ChunkState::kUnwritten);
  EXPECT_EQ(bm().state(2), ChunkState::kUnwritten);
  EXPECT_EQ(bm().state(3), ChunkState::kDirty);
  ASSERT_FALSE(bm().start_discard(0, 100));  // covers no chunk: nothing held
  bm().end_discard(0, 100);
  EXPECT_FALSE(bm().close()) << "an unbalanced discard would hold a page";
}

// A device within one chunk of 2^64 (largest chunk, 2^24 chunks): rounding a discard's
// start up to a chunk boundary must not wrap. It did, and a discard inside the partial
// last chunk turned every chunk Unwritten, one with a write in flight and a NeedSync
// one included.
TEST_F(BitmapTest, DiscardNearTheEndOfA2To64ByteDeviceDoesNotWrap) {
  BitmapOptions o = options(UINT64_MAX);
  o.chunk_bytes = kMaxChunkBytes;
  o.space_bytes = (std::uint64_t{1} << 24) + 4096;
  make(o);
  const std::uint64_t cb = bm().chunk_bytes();
  const std::uint64_t last = bm().chunks() - 1;
  ASSERT_EQ(bm().chunks(), std::uint64_t{1} << 24);
  const std::uint64_t last_off = last * cb;  // 2^64 - 2^40: the partial last chunk
  ASSERT_FALSE(bm().start_write(0, 4096));   // chunk 0: a write in flight
  bm().set_degraded(true);
  ASSERT_FALSE(bm().start_write(cb, 4096));  // chunk 1: NeedSync
  bm().end_write(cb, 4096);
  bm().set_degraded(false);
  ASSERT_FALSE(bm().start_write(last_off, 4096));  // the last chunk: Dirty
  bm().end_write(last_off, 4096);
  ASSERT_EQ(bm().state(1), ChunkState::kNeedSync);

  // Inside the last chunk, not reaching the end: covers no chunk.
  ASSERT_FALSE(bm().start_discard(last_off + 4096, 4096));
  bm().end_discard(last_off + 4096, 4096);
  // From inside the last chunk to the end of the device: still not a whole chunk.
  ASSERT_FALSE(bm().start_discard(last_off + 4096, UINT64_MAX - (last_off + 4096)));
  bm().end_discard(last_off + 4096, UINT64_MAX - (last_off + 4096));
  EXPECT_EQ(bm().state(0), ChunkState::kDirty) << "discarded under a write in flight";
  EXPECT_EQ(bm().state(1), ChunkState::kNeedSync) << "a NeedSync chunk was discarded";
  EXPECT_EQ(bm().state(last), ChunkState::kDirty);
  EXPECT_EQ(bm().counts().unwritten, bm().chunks() - 3);

  // The whole last chunk up to the end of the device: exactly that chunk.
  ASSERT_FALSE(bm().start_discard(last_off, UINT64_MAX - last_off));
  bm().end_discard(last_off, UINT64_MAX - last_off);
  EXPECT_EQ(bm().state(last), ChunkState::kUnwritten);
  EXPECT_EQ(bm().state(0), ChunkState::kDirty);
  EXPECT_EQ(bm().state(1), ChunkState::kNeedSync);
  // needs_sync() clips the runs to the device without wrapping either.
  const auto runs = bm().needs_sync();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0], std::make_pair(cb, cb));
  bm().end_write(0, 4096);
}

TEST_F(BitmapTest, DegradedWritesNeedSyncAndNothingIsCleaned) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  bm().set_degraded(true);
  ASSERT_FALSE(bm().start_write(kChunk, 4096));
  bm().end_write(kChunk, 4096);
  EXPECT_EQ(bm().state(1), ChunkState::kNeedSync);
  EXPECT_EQ(durable(1), kN);
  idle_and_clean();
  EXPECT_EQ(bm().state(0), ChunkState::kDirty) << "cleaned while degraded";
  EXPECT_FALSE(bm().flush());
  EXPECT_EQ(bm().state(0), ChunkState::kDirty) << "flush cleaned while degraded";
  bm().set_degraded(false);
  idle_and_clean();
  EXPECT_EQ(bm().state(0), ChunkState::kClean);
  EXPECT_EQ(bm().state(1), ChunkState::kNeedSync) << "NeedSync waits for the resync";
}

TEST_F(BitmapTest, ParityFirstWriteGivesNeedSync) {
  BitmapOptions o = options();
  o.parity = true;
  make(o);
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  EXPECT_EQ(bm().state(0), ChunkState::kNeedSync);
}

// failed() says true only once the stale mark is durable: a caller that sees it and then
// crashes must reopen with everything written NeedSync. The sync hook looks at failed()
// at the failing sync and at the stale mark's sync (the daemon or a flush can be the
// failing round's leader, so a caller may see failed() while that round still runs).
TEST_F(BitmapTest, FailedIsReportedOnlyOnceTheStaleMarkIsDurable) {
  make(options());
  std::vector<bool> failed_at_sync;
  st().set_sync_hook([&](const SyncEvent&) -> std::error_code {
    failed_at_sync.push_back(bm().failed());
    return {};
  });
  st().fail_sync(1);
  EXPECT_EQ(bm().start_write(7 * kChunk, 4096), std::errc::io_error);
  ASSERT_EQ(failed_at_sync.size(), 2u) << "the failing sync, then the stale mark's";
  EXPECT_FALSE(failed_at_sync[0]);
  EXPECT_FALSE(failed_at_sync[1]) << "failed() said true before the stale mark was durable";
  EXPECT_TRUE(bm().failed());
  std::error_code ec;
  auto sb = Superblock::decode(st().durable_image(), ec, st().durable_image().size());
  ASSERT_TRUE(sb) << ec.message();
  EXPECT_NE(sb->state & (kSbStale | kSbWriteError), 0u);
}

TEST_F(BitmapTest, SyncFailureFailsTheWriterAndTheBitmap) {
  // fsyncgate (S5): the writer gets the error, nothing trusts a retry, no Clean is
  // persisted again, and the next open resyncs everything written.
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));  // chunk 0 Dirty, durable
  bm().end_write(0, 4096);
  st().fail_sync(1);
  EXPECT_EQ(bm().start_write(7 * kChunk, 4096), std::errc::io_error);
  EXPECT_TRUE(bm().failed());
  EXPECT_EQ(bm().start_write(8 * kChunk, 4096), Errc::bitmap_failed);
  EXPECT_EQ(bm().start_write(0, 4096), Errc::bitmap_failed) << "even an already-Dirty chunk";
  idle_and_clean();
  EXPECT_EQ(bm().state(0), ChunkState::kDirty) << "Clean persisted after a failure";
  EXPECT_EQ(durable(0), kD);
  std::error_code ec;
  auto re = test::reopen(st().durable_image(), ec);
  ASSERT_TRUE(re) << ec.message();
  EXPECT_EQ(re->state(0), ChunkState::kNeedSync);
  EXPECT_NE(re->state(7), ChunkState::kClean);
}

TEST_F(BitmapTest, FailedWriteOfTheBitmapFailsTheWriter) {
  make(options());
  st().fail_write(1, std::make_error_code(std::errc::no_space_on_device));
  EXPECT_EQ(bm().start_write(0, 4096), std::errc::no_space_on_device);
  EXPECT_TRUE(bm().failed());
  EXPECT_EQ(bm().close(), Errc::bitmap_failed);
}

TEST_F(BitmapTest, ZeroedOrCorruptBlockReopensAsNeedSyncNeverUnwritten) {
  make(options());
  ASSERT_FALSE(bm().start_write(4000 * kChunk, 4096));
  bm().end_write(4000 * kChunk, 4096);
  idle_and_clean();
  std::vector<std::byte> img = st().durable_image();
  const Geometry& g = bm().geometry();
  const std::uint64_t b = g.block_of_chunk(4000);
  std::fill_n(img.begin() + static_cast<std::ptrdiff_t>(b * g.block_bytes()), g.block_bytes(),
              std::byte{0});  // a zeroed block: would read as Unwritten without checksums
  std::error_code ec;
  auto re = test::reopen(img, ec);
  ASSERT_TRUE(re) << ec.message();
  const ChunkRange r = g.chunks_in_block(b);
  for (std::uint64_t c = r.first; c < r.end; ++c)
    ASSERT_EQ(re->state(c), ChunkState::kNeedSync) << "chunk " << c;
  EXPECT_EQ(re->stats().bad_blocks, 1u);
  EXPECT_EQ(re->state(r.first - 1), ChunkState::kUnwritten);  // other blocks are trusted
  // One flipped bit in another block is caught too.
  img = st().durable_image();
  img[g.chunk_pos(20)] ^= std::byte{0x01};
  re = test::reopen(img, ec);
  ASSERT_TRUE(re);
  EXPECT_EQ(re->state(20), ChunkState::kNeedSync);
  EXPECT_EQ(re->state(0), ChunkState::kNeedSync);  // same block as chunk 20
}

// FIRST_USE (mdadm's "the states were never initialised"): open initialises every chunk
// as the kernel's Init does (Unwritten; Clean when CLEAN is set too) without trusting a
// stored byte or checksum, makes that durable, and only then clears the flag.
TEST_F(BitmapTest, FirstUseReinitialisesEveryChunkAndIsCleared) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  idle_and_clean();  // chunk 0 Clean
  ASSERT_FALSE(bm().start_write(3 * kChunk, 4096));
  bm().end_write(3 * kChunk, 4096);  // chunk 3 Dirty
  for (const bool clean : {false, true}) {
    std::vector<std::byte> img = st().durable_image();
    std::error_code ec;
    auto sb = Superblock::decode(img, ec, img.size());
    ASSERT_TRUE(sb) << ec.message();
    sb->state |= kSbFirstUse | (clean ? kSbClean : 0u);
    sb->encode(std::span<std::byte, kSuperblockBytes>(img.data(), kSuperblockBytes));
    const Geometry& g = bm().geometry();
    img[g.chunk_pos(5)] = std::byte{0x77};  // garbage, and block checksums that fail
    FaultStorage* rs = nullptr;
    auto re = test::reopen(img, ec, &rs);
    ASSERT_TRUE(re) << ec.message();
    const ChunkState want = clean ? ChunkState::kClean : ChunkState::kUnwritten;
    for (std::uint64_t c : {0ull, 3ull, 5ull, 16383ull})
      EXPECT_EQ(re->state(c), want) << "chunk " << c << " clean " << clean;
    const StateCounts n = re->counts();
    EXPECT_EQ(clean ? n.clean : n.unwritten, re->chunks());
    EXPECT_EQ(re->stats().bad_blocks, 0u);
    EXPECT_EQ(re->stats().invalid_bytes, 0u);
    const std::vector<std::byte> after = rs->durable_image();
    auto sb2 = Superblock::decode(after, ec, after.size());
    ASSERT_TRUE(sb2) << ec.message();
    EXPECT_EQ(sb2->state & kSbFirstUse, 0u) << "FIRST_USE left set";
    const auto stored = stored_states(after);
    for (std::uint64_t c : {0ull, 3ull, 5ull})
      EXPECT_EQ(stored.at(c), to_byte(want)) << "chunk " << c << " not durable";
  }
}

TEST_F(BitmapTest, CloseRefusesWhileAWriteIsInFlight) {
  BitmapOptions o = options();
  o.start_daemon = true;
  make(o);
  ASSERT_FALSE(bm().start_write(0, 4096));
  EXPECT_EQ(bm().close(), Errc::busy);
  ASSERT_FALSE(bm().start_write(kChunk, 4096));  // still usable
  bm().end_write(kChunk, 4096);
  bm().end_write(0, 4096);
  EXPECT_FALSE(bm().close());
  EXPECT_EQ(durable(0), kC) << "close cleans and persists";
}

// After close() every entry point keeps the contract of bitmap.h, in every build (none
// of these checks is a debug-only one): writes, discards, flushes and the setters are
// refused with Errc::bitmap_closed, close() reports success again, the queries still
// answer, and destroying the bitmap does not abort. Degraded, so that close() leaves
// chunk 0 Dirty and durable: a start_write on it would take the fast path.
TEST_F(BitmapTest, CallsAfterCloseAreRefusedWithBitmapClosed) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  bm().set_degraded(true);
  ASSERT_FALSE(bm().close());
  ASSERT_EQ(bm().state(0), ChunkState::kDirty);
  EXPECT_EQ(bm().start_write(0, 4096), Errc::bitmap_closed) << "the fast path's chunk";
  EXPECT_EQ(bm().start_write(kChunk, 2 * kChunk), Errc::bitmap_closed);
  EXPECT_EQ(bm().start_write(0, 0), std::errc::invalid_argument) << "arguments first";
  std::error_code ec;
  WriteGuard g = bm().guard_write(0, 4096, ec);
  EXPECT_EQ(ec, Errc::bitmap_closed);
  EXPECT_FALSE(g);
  EXPECT_EQ(bm().start_discard(0, 4 * kChunk), Errc::bitmap_closed);
  EXPECT_EQ(bm().start_discard(0, 100), Errc::bitmap_closed) << "even one that covers no chunk";
  EXPECT_EQ(bm().flush(), Errc::bitmap_closed);
  EXPECT_EQ(bm().set_daemon_sleep(1000ms), Errc::bitmap_closed);
  EXPECT_EQ(bm().set_barrier_idle(1000ms), Errc::bitmap_closed);
  EXPECT_EQ(bm().daemon_sleep(), 50ms) << "a refused setter changes nothing";
  EXPECT_FALSE(bm().close()) << "close() after a successful close() succeeds again";
  EXPECT_EQ(bm().counts().dirty, 1u);
  EXPECT_FALSE(bm().failed());
  EXPECT_EQ(bm().start_write(0, 4096), Errc::bitmap_closed);
  destroy();  // must not abort
}

// A writer that passed start_write's entry check before close() finished, then met a
// page close() had suspended, is woken when close() succeeds and returns
// Errc::bitmap_closed (it used to wait forever, and the destructor then aborted with
// "destroyed with N writers waiting"). A discard on another page too. close() is held
// inside its final sync, where every page is suspended.
TEST_F(BitmapTest, WritersWaitingOnASuspendedPageWhenCloseSucceedsGetBitmapClosed) {
  make(options());
  test::Flag in_sync, release_sync;
  std::atomic<bool> hold{false};
  hold_one_sync(hold, in_sync, release_sync);
  const std::uint64_t other_page = bm().geometry().first_chunk_of_page(2) * kChunk;
  hold.store(true);
  std::error_code close_ec = make_error_code(Errc::busy);
  std::thread closer([&] { close_ec = bm().close(); });
  in_sync.wait();  // every page is suspended now
  const auto waits_before = bm().stats().raise_waits;
  std::error_code write_ec, discard_ec;
  test::Flag write_done, discard_done;
  std::thread writer([&] {
    write_ec = bm().start_write(0, 4096);
    write_done.set();
  });
  std::thread discarder([&] {
    discard_ec = bm().start_discard(other_page, kChunk);
    discard_done.set();
  });
  test::spin_until([&] { return bm().stats().raise_waits >= waits_before + 2; });
  EXPECT_FALSE(write_done.is_set());
  release_sync.set();
  closer.join();
  EXPECT_FALSE(close_ec) << close_ec.message();
  // Watchdogs only: without the wake-up both threads wait forever.
  ASSERT_TRUE(write_done.wait_for(60s)) << "a writer was left waiting after close()";
  ASSERT_TRUE(discard_done.wait_for(60s)) << "a discard was left waiting after close()";
  writer.join();
  discarder.join();
  EXPECT_EQ(write_ec, Errc::bitmap_closed);
  EXPECT_EQ(discard_ec, Errc::bitmap_closed);
  EXPECT_EQ(bm().state(0), ChunkState::kUnwritten) << "a closed bitmap marked a chunk";
  st().set_sync_hook({});
  destroy();  // no writer waits and none holds a page: must not abort
}

// A close() that fails (here the engine's data flush) closes the bitmap all the same:
// the chunks it could not clean stay Dirty on the medium (the next open resyncs them),
// and every later close() reports the same error instead of success.
TEST_F(BitmapTest, FailedCloseIsFinalAndEveryLaterCloseReportsItsError) {
  BitmapOptions o = options();
  auto fail_flush = std::make_shared<std::atomic<bool>>(false);
  o.data_flush = [fail_flush]() -> std::error_code {
    return fail_flush->load() ? std::make_error_code(std::errc::io_error) : std::error_code{};
  };
  make(o);
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  fail_flush->store(true);
  EXPECT_EQ(bm().close(), std::errc::io_error);
  EXPECT_EQ(durable(0), kD) << "not cleaned: the data flush failed";
  fail_flush->store(false);
  EXPECT_EQ(bm().close(), std::errc::io_error) << "a second close() hid the first one's error";
  EXPECT_EQ(bm().close(), std::errc::io_error);
  EXPECT_EQ(bm().start_write(kChunk, 4096), Errc::bitmap_closed);
  EXPECT_EQ(durable(0), kD);
  destroy();
}

TEST_F(BitmapTest, FailedPersistAtCloseIsReportedByEveryLaterClose) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  st().fail_sync(1);
  const std::error_code first = bm().close();
  EXPECT_TRUE(first);
  EXPECT_TRUE(bm().failed());
  EXPECT_EQ(bm().close(), first);
  EXPECT_EQ(bm().start_write(kChunk, 4096), Errc::bitmap_closed) << "closed wins over failed";
}

TEST_F(BitmapTest, FlushUnderContinuousWritesCompletes) {
  make(options());
  std::atomic<bool> stop{false};
  std::atomic<long> writes{0};
  std::vector<std::thread> ws;
  for (int w = 0; w < 2; ++w) {
    ws.emplace_back([&, w] {
      std::uint64_t c = static_cast<std::uint64_t>(w) * 100;
      while (!stop.load()) {
        ASSERT_FALSE(bm().start_write(c * kChunk, 4096));
        bm().end_write(c * kChunk, 4096);
        writes.fetch_add(1);
        c = (c + 1) % 200;
      }
    });
  }
  test::spin_until([&] { return writes.load() > 1000; });
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(bm().flush());
  stop.store(true);
  for (auto& t : ws) t.join();
  EXPECT_FALSE(bm().flush());
  EXPECT_EQ(bm().counts().dirty, 0u);
  EXPECT_GE(bm().stats().pages_cleaned, 1u);
  EXPECT_EQ(bm().stats().suspend_timeouts, 0u) << "a flush starved behind continuous writes";
}

TEST_F(BitmapTest, SecondWriterWaitsForTheFirstWritersPersistOfTheSameBlock) {
  // S2 with the bit already Dirty in memory: W2 must not return before W1's persist of
  // that block is durable.
  make(options());
  test::Flag in_sync, release_sync;
  std::atomic<bool> hold{true};
  hold_one_sync(hold, in_sync, release_sync);
  std::atomic<int> bad{0};
  std::thread w1([&] {
    ASSERT_FALSE(bm().start_write(0, 4096));
    if (durable(0) != kD) bad.fetch_add(1);
    bm().end_write(0, 4096);
  });
  in_sync.wait();  // W1's persist is inside fdatasync; chunk 0 is Dirty in memory
  ASSERT_EQ(bm().state(0), ChunkState::kDirty);
  test::Flag w2_done;
  std::thread w2([&] {
    ASSERT_FALSE(bm().start_write(100, 4096));  // same chunk, already Dirty
    if (durable(0) != kD) bad.fetch_add(1);
    bm().end_write(100, 4096);
    w2_done.set();
  });
  test::spin_until([&] { return bm().stats().persist_waits >= 2; });
  EXPECT_FALSE(w2_done.is_set()) << "W2 returned while W1's persist was still in flight";
  release_sync.set();
  w1.join();
  w2.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(BitmapTest, AWriteToADurablyDirtyChunkDoesNotWaitForAnotherChunksPersist) {
  // Chunk 0 is durably Dirty. While a persist of its block for chunk 1 is inside
  // fdatasync, a write of chunk 0 returns at once: whatever of that persist lands, chunk
  // 0 reopens Dirty.
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  ASSERT_EQ(durable(0), kD);
  test::Flag in_sync, release_sync;
  std::atomic<bool> hold{true};
  hold_one_sync(hold, in_sync, release_sync);
  std::thread w1([&] {
    ASSERT_FALSE(bm().start_write(kChunk, 4096));  // chunk 1, the same block
    bm().end_write(kChunk, 4096);
  });
  in_sync.wait();
  const auto waits_before = bm().stats().persist_waits;
  test::Flag w2_done;
  std::error_code w2_ec = make_error_code(Errc::busy);
  std::thread w2([&] {
    w2_ec = bm().start_write(100, 4096);  // chunk 0 again
    w2_done.set();
  });
  // A watchdog only: a write that waited for chunk 1's persist would wait until the
  // release below.
  EXPECT_TRUE(w2_done.wait_for(60s)) << "the write of a durably Dirty chunk waited";
  EXPECT_EQ(bm().stats().persist_waits, waits_before);
  release_sync.set();
  w1.join();
  w2.join();
  EXPECT_FALSE(w2_ec) << w2_ec.message();
  bm().end_write(100, 4096);
}

TEST_F(BitmapTest, ConcurrentWritersToOneBlockShareSyncs) {
  // Group commit: while the first writer's sync is held, three more writers dirty other
  // chunks of the same block; all three are covered by one more sync.
  make(options());
  constexpr int kWriters = 4;
  test::Flag in_sync, release_sync;
  std::atomic<bool> hold{true};
  hold_one_sync(hold, in_sync, release_sync);
  const auto rounds_before = bm().stats().persist_rounds;
  std::vector<std::thread> ws;
  ws.emplace_back([&] {
    ASSERT_FALSE(bm().start_write(0, 4096));
    bm().end_write(0, 4096);
  });
  in_sync.wait();
  for (int i = 1; i < kWriters; ++i) {
    ws.emplace_back([&, i] {
      const std::uint64_t off = static_cast<std::uint64_t>(i) * kChunk;
      ASSERT_FALSE(bm().start_write(off, 4096));
      bm().end_write(off, 4096);
    });
  }
  test::spin_until([&] {
    for (std::uint64_t c = 1; c < kWriters; ++c)
      if (bm().state(c) != ChunkState::kDirty) return false;
    return true;
  });
  release_sync.set();
  for (auto& t : ws) t.join();
  const auto rounds = bm().stats().persist_rounds - rounds_before;
  EXPECT_EQ(rounds, 2u) << kWriters << " writes to one block took " << rounds << " syncs";
  std::printf("group commit: %d writes to clean chunks of one block, %llu syncs\n", kWriters,
              static_cast<unsigned long long>(rounds));
}

TEST_F(BitmapTest, PersistsOfOneBlockNeverLandOutOfOrder) {
  // S3: with persists serialised, the sync that carries a newer snapshot of a block is
  // never followed by one carrying an older snapshot of it.
  make(options());
  std::mutex mu;
  std::vector<std::vector<std::byte>> block0_writes;
  st().set_write_hook([&](const WriteEvent& ev) -> std::error_code {
    if (ev.offset == 0) {
      std::lock_guard lk(mu);
      block0_writes.emplace_back(ev.data.begin(), ev.data.end());
    }
    return {};
  });
  std::vector<std::thread> ws;
  for (int w = 0; w < 3; ++w) {
    ws.emplace_back([&, w] {
      for (int i = 0; i < 40; ++i) {
        const std::uint64_t c = static_cast<std::uint64_t>(w * 40 + i);
        ASSERT_FALSE(bm().start_write(c * kChunk, 512));
        bm().end_write(c * kChunk, 512);
      }
    });
  }
  for (auto& t : ws) t.join();
  // Each later snapshot of block 0 has at least the Dirty chunks of every earlier one.
  const Geometry& g = bm().geometry();
  std::size_t prev = 0;
  for (const auto& snap : block0_writes) {
    std::size_t dirty = 0;
    for (std::uint64_t c = 0; c < 120; ++c) dirty += snap[g.chunk_pos(c)] == std::byte{kD} ? 1 : 0;
    EXPECT_GE(dirty, prev);
    prev = dirty;
  }
  EXPECT_EQ(stored_states(st().durable_image())[119], kD);
}

TEST_F(BitmapTest, ReloadTurnsSyncingIntoNeedSync) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  const std::vector<std::byte> crash = st().durable_image();
  bm().end_write(0, 4096);
  std::error_code ec;
  FaultStorage* rs = nullptr;
  auto re = test::reopen(crash, ec, &rs);
  ASSERT_TRUE(re->start_sync(0));
  ASSERT_FALSE(re->flush());  // Syncing may reach the disk via a neighbour's persist
  auto re2 = test::reopen(rs->durable_image(), ec);
  ASSERT_TRUE(re2);
  EXPECT_EQ(re2->state(0), ChunkState::kNeedSync);
}

// ------------------------------------------------------------------ recovery views

using Runs = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

// One chunk of every state, on a device whose last chunk is short:
//   0 Unwritten, 1 Clean, 2 Dirty, 3 NeedSync, 4 Syncing, 5-6 Dirty, 8 Clean,
//   last (short) Dirty; everything else Unwritten.
TEST_F(BitmapTest, RecoveryAndRebuildViewsListTheirStatesMergedAndClipped) {
  constexpr std::uint64_t kDevice = (1ull << 30) - 1000;  // the last chunk is 64 KiB - 1000
  make(options(kDevice));
  const std::uint64_t last = bm().chunks() - 1;
  const std::uint64_t last_off = last * kChunk;
  auto write = [&](std::uint64_t chunk) {
    ASSERT_FALSE(bm().start_write(chunk * kChunk, 4096));
    bm().end_write(chunk * kChunk, 4096);
  };
  write(1);
  write(8);
  idle_and_clean();  // 1, 8 Clean
  for (std::uint64_t c : {std::uint64_t{2}, std::uint64_t{5}, std::uint64_t{6}, last}) write(c);
  bm().set_degraded(true);
  write(3);
  write(4);
  bm().set_degraded(false);
  ASSERT_TRUE(bm().start_sync(4 * kChunk));
  ASSERT_EQ(bm().state(0), ChunkState::kUnwritten);
  ASSERT_EQ(bm().state(1), ChunkState::kClean);
  ASSERT_EQ(bm().state(2), ChunkState::kDirty);
  ASSERT_EQ(bm().state(3), ChunkState::kNeedSync);
  ASSERT_EQ(bm().state(4), ChunkState::kSyncing);
  ASSERT_EQ(bm().state(last), ChunkState::kDirty);

  EXPECT_EQ(bm().needs_sync(), (Runs{{3 * kChunk, 2 * kChunk}}));
  EXPECT_EQ(bm().needs_recovery(), (Runs{{2 * kChunk, 5 * kChunk}, {last_off, kDevice - last_off}}))
      << "Dirty, NeedSync, Syncing; 2..6 merged; the last chunk clipped to the device";
  EXPECT_EQ(bm().needs_rebuild(),
            (Runs{{1 * kChunk, 6 * kChunk}, {8 * kChunk, kChunk}, {last_off, kDevice - last_off}}))
      << "everything but Unwritten";

  // Nothing written: every view is empty; everything written Clean: only the rebuild
  // view lists it.
  make(options(kDevice));
  EXPECT_TRUE(bm().needs_recovery().empty());
  EXPECT_TRUE(bm().needs_rebuild().empty());
  ASSERT_FALSE(bm().start_write(0, kDevice));
  bm().end_write(0, kDevice);
  EXPECT_EQ(bm().needs_recovery(), (Runs{{0, kDevice}}));
  idle_and_clean();
  EXPECT_TRUE(bm().needs_sync().empty());
  EXPECT_TRUE(bm().needs_recovery().empty());
  EXPECT_EQ(bm().needs_rebuild(), (Runs{{0, kDevice}}));
}

// start_sync(offset, kind) for every state and kind: what it returns and what it leaves.
TEST_F(BitmapTest, StartSyncOfARecoveryOrRebuildTakesDirtyAndCleanChunks) {
  struct Want {
    bool copy;
    ChunkState after;
  };
  constexpr SyncKind kKinds[] = {SyncKind::kResync, SyncKind::kRecovery, SyncKind::kRebuild};
  const ChunkState U = ChunkState::kUnwritten, C = ChunkState::kClean, D = ChunkState::kDirty,
                   Y = ChunkState::kSyncing;  // NeedSync never stays NeedSync here
  // [kind][state]: Unwritten, Clean, Dirty, NeedSync, Syncing.
  const Want want[3][5] = {
      {{false, U}, {false, C}, {false, D}, {true, Y}, {true, Y}},  // kResync
      {{false, U}, {false, C}, {true, Y}, {true, Y}, {true, Y}},   // kRecovery
      {{false, U}, {true, Y}, {true, Y}, {true, Y}, {true, Y}},    // kRebuild
  };
  make(options());
  // Chunk 10 * kind + state holds that state.
  auto chunk = [](int kind, int state) { return std::uint64_t(10 * kind + state); };
  auto write = [&](std::uint64_t c) {
    ASSERT_FALSE(bm().start_write(c * kChunk, 4096));
    bm().end_write(c * kChunk, 4096);
  };
  for (int k = 0; k < 3; ++k) write(chunk(k, 1));
  idle_and_clean();
  for (int k = 0; k < 3; ++k) write(chunk(k, 2));
  bm().set_degraded(true);
  for (int k = 0; k < 3; ++k) {
    write(chunk(k, 3));
    write(chunk(k, 4));
  }
  bm().set_degraded(false);
  for (int k = 0; k < 3; ++k) ASSERT_TRUE(bm().start_sync(chunk(k, 4) * kChunk));
  for (int k = 0; k < 3; ++k)
    for (int st = 0; st < 5; ++st)
      ASSERT_EQ(bm().state(chunk(k, st)), kChunkStates[st]) << "setup " << k << "/" << st;

  for (int k = 0; k < 3; ++k) {
    for (int st = 0; st < 5; ++st) {
      const std::uint64_t c = chunk(k, st);
      EXPECT_EQ(bm().start_sync(c * kChunk, kKinds[k]), want[k][st].copy)
          << "kind " << k << ", state " << to_string(kChunkStates[st]);
      EXPECT_EQ(bm().state(c), want[k][st].after)
          << "kind " << k << ", state " << to_string(kChunkStates[st]);
    }
  }
  // The recovered chunks behave as any Syncing chunk: end_sync -> Dirty -> cleaned,
  // abort_sync -> NeedSync (listed by every view until resynced).
  bm().end_sync(chunk(1, 2) * kChunk);
  EXPECT_EQ(bm().state(chunk(1, 2)), ChunkState::kDirty);
  bm().abort_sync(chunk(2, 1) * kChunk);
  EXPECT_EQ(bm().state(chunk(2, 1)), ChunkState::kNeedSync);
  bm().run_daemon_once();  // end_sync expired its page
  EXPECT_EQ(bm().state(chunk(1, 2)), ChunkState::kClean);
  // Degraded, kResync takes Dirty too (upstream's rule, unchanged).
  write(50);
  bm().set_degraded(true);
  EXPECT_TRUE(bm().start_sync(50 * kChunk));
  EXPECT_EQ(bm().state(50), ChunkState::kSyncing);
  bm().end_sync(50 * kChunk);
  bm().set_degraded(false);
  // A crash while a rebuilt Clean chunk is Syncing resyncs it.
  write(60);
  idle_and_clean();
  ASSERT_EQ(bm().state(60), ChunkState::kClean);
  ASSERT_TRUE(bm().start_sync(60 * kChunk, SyncKind::kRebuild));
  ASSERT_FALSE(bm().flush());
  std::error_code ec;
  auto re = test::reopen(st().durable_image(), ec);
  ASSERT_TRUE(re) << ec.message();
  EXPECT_EQ(re->state(60), ChunkState::kNeedSync);
}

// A member lost with a write in flight (no flush first): the chunk is Dirty when the
// bitmap goes degraded, stays Dirty when written again while degraded, and the daemon
// leaves it alone. needs_sync() does not list it, so an engine that re-adds the member
// with needs_sync() copies only chunk 9, and once not degraded the daemon cleans chunk 7
// although the member never got its writes. needs_recovery() lists it, and
// start_sync(kRecovery) takes it.
TEST_F(BitmapTest, ReaddAfterAnUnplannedFailureNeedsTheDirtyChunksToo) {
  make(options());
  ASSERT_FALSE(bm().start_write(7 * kChunk, 4096));  // in flight to both members
  bm().set_degraded(true);                           // one member fails under it
  bm().end_write(7 * kChunk, 4096);
  ASSERT_FALSE(bm().start_write(7 * kChunk, 8192));  // written again, degraded
  bm().end_write(7 * kChunk, 8192);
  ASSERT_FALSE(bm().start_write(9 * kChunk, 4096));
  bm().end_write(9 * kChunk, 4096);
  idle_and_clean();
  EXPECT_EQ(bm().state(7), ChunkState::kDirty);
  EXPECT_EQ(bm().state(9), ChunkState::kNeedSync);
  EXPECT_EQ(bm().needs_sync(), (Runs{{9 * kChunk, kChunk}})) << "the resync view";
  const Runs recovery = bm().needs_recovery();
  EXPECT_EQ(recovery, (Runs{{7 * kChunk, kChunk}, {9 * kChunk, kChunk}}));
  // The re-add, while still degraded (as md's recovery), then back to normal.
  for (const auto& [off, len] : recovery) {
    for (std::uint64_t o = off; o < off + len; o += kChunk) {
      ASSERT_TRUE(bm().start_sync(o, SyncKind::kRecovery)) << o;
      bm().end_sync(o);
    }
  }
  bm().set_degraded(false);
  idle_and_clean();
  EXPECT_EQ(bm().state(7), ChunkState::kClean);
  EXPECT_EQ(bm().state(9), ChunkState::kClean);
  EXPECT_TRUE(bm().needs_recovery().empty());
}

// ------------------------------------------------------------------ identity

TEST_F(BitmapTest, EventsCountOpensAndClosesAndNothingElse) {
  make(options());
  EXPECT_EQ(bm().events(), 1u) << "created at 0, opened once";
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  idle_and_clean();
  ASSERT_FALSE(bm().flush());
  EXPECT_EQ(bm().events(), 1u) << "writes, passes and flushes do not move it";
  ASSERT_FALSE(bm().close());
  EXPECT_EQ(bm().events(), 2u);
  std::error_code ec;
  auto re = test::reopen(st().durable_image(), ec);
  ASSERT_TRUE(re) << ec.message();
  EXPECT_EQ(re->events(), 3u);
  EXPECT_FALSE(re->out_of_date());
}

// A copy of the file taken before the engine's record (a backup restored over it): with
// min_events it opens out of date, every chunk NeedSync, Unwritten included; without,
// it is trusted and a chunk written after the copy is not resynced.
TEST_F(BitmapTest, ABitmapOlderThanMinEventsOpensOutOfDate) {
  make(options());
  ASSERT_FALSE(bm().start_write(0, 4096));
  bm().end_write(0, 4096);
  ASSERT_FALSE(bm().flush());
  const std::vector<std::byte> old_copy = st().durable_image();  // events 1
  ASSERT_FALSE(bm().start_write(5 * kChunk, 4096));              // after the copy
  bm().end_write(5 * kChunk, 4096);
  ASSERT_FALSE(bm().close());
  const std::uint64_t recorded = bm().events();  // 2: what the engine keeps
  ASSERT_EQ(recorded, 2u);

  std::error_code ec;
  {
    auto trusted = test::reopen(old_copy, ec);
    ASSERT_TRUE(trusted) << ec.message();
    EXPECT_EQ(trusted->state(5), ChunkState::kUnwritten) << "the copy knows nothing of it";
  }
  for (const std::uint64_t min : {recorded, recorded + 40}) {
    auto storage = std::make_unique<FaultStorage>(old_copy);
    FaultStorage* raw = storage.get();
    OpenOptions oo;
    oo.start_daemon = false;
    oo.min_events = min;
    auto re = Bitmap::open(std::move(storage), oo, ec);
    ASSERT_TRUE(re) << ec.message();
    EXPECT_TRUE(re->out_of_date());
    EXPECT_EQ(re->counts().need_sync, re->chunks()) << "every chunk, Unwritten included";
    EXPECT_EQ(re->events(), min + 1) << "never below the engine's record again";
    // Durable before open returned: a crash right now reopens with them (even unchecked).
    auto again = test::reopen(raw->durable_image(), ec);
    ASSERT_TRUE(again) << ec.message();
    EXPECT_EQ(again->counts().need_sync, again->chunks());
  }
  // Not older: no effect.
  OpenOptions oo;
  oo.start_daemon = false;
  oo.min_events = 1;
  auto fresh = Bitmap::open(std::make_unique<FaultStorage>(old_copy), oo, ec);
  ASSERT_TRUE(fresh) << ec.message();
  EXPECT_FALSE(fresh->out_of_date());
  EXPECT_EQ(fresh->state(5), ChunkState::kUnwritten);
}

// Every crash image of an out-of-date open, at every sync it makes, reopens (with the
// same min_events, as the engine would) with every chunk NeedSync.
TEST_F(BitmapTest, ACrashDuringAnOutOfDateOpenKeepsEveryChunkNeedSync) {
  make(options(64ull << 20));  // 1024 chunks
  ASSERT_FALSE(bm().flush());
  const std::vector<std::byte> old_copy = st().durable_image();
  ASSERT_FALSE(bm().close());
  const std::uint64_t recorded = bm().events() + 3;
  auto storage = std::make_unique<FaultStorage>(old_copy);
  std::vector<std::vector<std::byte>> images;
  storage->set_sync_hook([&](const SyncEvent& ev) -> std::error_code {
    std::vector<std::byte> before(ev.durable_image.begin(), ev.durable_image.end());
    images.push_back(before);
    std::vector<std::byte> after = before;  // every pending write landed
    for (const PendingWrite& w : ev.pending) {
      if (after.size() < w.offset + w.data.size()) after.resize(w.offset + w.data.size());
      std::copy(w.data.begin(), w.data.end(),
                after.begin() + static_cast<std::ptrdiff_t>(w.offset));
    }
    images.push_back(after);
    for (const PendingWrite& w : ev.pending) {  // each write alone
      std::vector<std::byte> one = before;
      std::copy(w.data.begin(), w.data.end(), one.begin() + static_cast<std::ptrdiff_t>(w.offset));
      images.push_back(one);
    }
    return {};
  });
  FaultStorage* raw = storage.get();
  OpenOptions oo;
  oo.start_daemon = false;
  oo.min_events = recorded;
  std::error_code ec;
  auto re = Bitmap::open(std::move(storage), oo, ec);
  ASSERT_TRUE(re) << ec.message();
  raw->set_sync_hook({});
  ASSERT_GE(images.size(), 4u) << "open makes two syncs";
  for (std::size_t i = 0; i < images.size(); ++i) {
    auto img = std::make_unique<FaultStorage>(images[i]);
    auto c = Bitmap::open(std::move(img), oo, ec);
    ASSERT_TRUE(c) << "image " << i << ": " << ec.message();
    EXPECT_EQ(c->counts().need_sync, c->chunks()) << "image " << i;
  }
}

}  // namespace
}  // namespace llbitmap
