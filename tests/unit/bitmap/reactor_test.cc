// SPDX-License-Identifier: LGPL-2.1-or-later
//
// ReactorBitmap and ReactorQueue (include/llbitmap/reactor.h) driven step by step: a
// FakeClock, a MetaEngine (tests/support/meta_engine.h) that performs the metadata IO
// on a MetaDisk in an order the test picks, explicit step() and poll() calls. Nothing
// sleeps; a loop that waits for the grace period of a page kill (run by the library's
// switch thread) yields and is bounded by a generous iteration cap.
#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/clock.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/reactor.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "image_states.h"
#include "meta_disk.h"
#include "meta_engine.h"
#include "start_gate.h"
#include <poll.h>

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
using test::MetaDisk;
using test::MetaEngine;

// Bounds the loops that wait for the switch thread's grace period: a hang becomes a
// failure, never an ordering tool.
constexpr int kCap = 2'000'000;

// The fixture's chunk size (ReactorTest::kChunk), for helpers outside it.
constexpr std::uint64_t kTestChunk = 64 << 10;

// True while the test is inside a ReactorQueue::poll() call (on any thread).
std::atomic<int> g_polls{0};

// A ReactorWrite that records its callback.
struct Probe : ReactorWrite {
  Probe() : ReactorWrite(&Probe::on_admit) {}
  static void on_admit(ReactorWrite& w, std::error_code ec) {
    auto& p = static_cast<Probe&>(w);
    // relaxed: the flag is set and read on the thread that runs the callback's poll().
    p.from_poll = g_polls.load(std::memory_order_relaxed) > 0;
    p.ec = ec;
    p.thread = std::this_thread::get_id();
    if (p.hook) p.hook(p);
    p.calls.fetch_add(1);  // seq_cst: read by the test thread after it joins or polls
  }
  std::atomic<int> calls{0};
  std::error_code ec;
  bool from_poll = false;
  std::thread::id thread;
  std::function<void(Probe&)> hook;
};

std::size_t poll_queue(ReactorQueue& q) {
  g_polls.fetch_add(1);
  const std::size_t n = q.poll();
  g_polls.fetch_sub(1);
  return n;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

class ReactorTest : public ::testing::Test {
 protected:
  static constexpr std::uint64_t kChunk = kTestChunk;

  static BitmapOptions options() {
    BitmapOptions o;
    o.device_bytes = 1ull << 30;  // 16384 chunks: 4096 per page, 4 pages of states
    o.chunk_bytes = kChunk;
    o.space_bytes = 128 << 10;
    o.block_bytes = 4096;
    o.daemon_sleep = 1000ms;
    o.barrier_idle = 100ms;
    return o;
  }

  void open(ReactorOptions ro = {}, std::uint64_t seed = 1) {
    std::error_code ec;
    formatted_ = ReactorBitmap::format(options(), ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_FALSE(formatted_.empty());
    disk_ = std::make_unique<MetaDisk>(formatted_);
    ro.clock = &clock_;
    bm_ = ReactorBitmap::open(disk_->durable_image(), ro, ec);
    ASSERT_TRUE(bm_) << ec.message();
    ASSERT_FALSE(ec) << ec.message();
    io_ = std::make_unique<MetaEngine>(*bm_, *disk_, seed);
  }

  void open_ready(ReactorOptions ro = {}) {
    open(ro);
    if (HasFatalFailure()) return;
    io_->drain();
    ASSERT_TRUE(bm_->ready());
  }

  void TearDown() override {
    if (!bm_) return;
    EXPECT_TRUE(io_->violations().empty()) << io_->violations().front();
    bm_->begin_close();
    std::error_code ec;
    const bool closed = run_until([&] {
      io_->pull();  // a failed bitmap may still hand out its stale mark
      return bm_->close_state(ec) == ReactorBitmap::CloseState::kClosed &&
             io_->outstanding().empty();
    });
    if (!closed) {
      ADD_FAILURE() << "the bitmap did not close (" << ec.message()
                    << "): leaked, so that its destructor does not abort the test program";
      (void)bm_.release();
      (void)io_.release();
      return;
    }
    io_.reset();
    bm_.reset();
  }

  // Steps the cleaning pass, performs the metadata IO and polls `q` until `done`.
  template <class Done>
  bool run_until(Done done, ReactorQueue* q = nullptr) {
    for (int i = 0; i < kCap; ++i) {
      if (done()) return true;
      bm_->step();
      io_->drain();
      if (q != nullptr) poll_queue(*q);
      std::this_thread::yield();
    }
    return done();
  }

  Admit start(ReactorQueue& q, std::uint64_t chunk, Probe& p, std::uint64_t chunks = 1) {
    ec_ = {};
    return q.start_write(chunk * kChunk, chunks * kChunk, p, ec_);
  }
  void end(std::uint64_t chunk, std::uint64_t chunks = 1) {
    bm_->end_write(chunk * kChunk, chunks * kChunk);
  }

  // Starts a write and drives IO until it is admitted; false if it was refused.
  bool write_admitted(ReactorQueue& q, std::uint64_t chunk, Probe& p) {
    const Admit a = start(q, chunk, p);
    if (a == Admit::kReady) return true;
    if (a == Admit::kRefused) return false;
    if (!run_until([&] { return p.calls.load() > 0; }, &q)) return false;
    return !p.ec;
  }

  // The state the durable image holds for `chunk` (nullopt: its block does not verify).
  std::optional<ChunkState> durable(std::uint64_t chunk) const {
    const auto s = test::image_states(disk_->durable_image());
    if (chunk >= s.size() || !s[chunk]) return std::nullopt;
    return static_cast<ChunkState>(*s[chunk]);
  }
  bool durably_dirty(std::uint64_t chunk) const {
    const auto s = durable(chunk);
    return s && is_dirty_like(*s);
  }
  std::uint64_t durable_events() const {
    const std::vector<std::byte> f = disk_->durable_image();
    std::error_code ec;
    const auto sb = Superblock::decode(f, ec, f.size());
    return sb ? sb->events : ~std::uint64_t{0};
  }
  // Makes the page of a chunk written before now expire for the cleaning pass.
  void expire() { clock_.advance(options().daemon_sleep + options().barrier_idle + 1ms); }

  FakeClock clock_;
  std::vector<std::byte> formatted_;
  std::unique_ptr<MetaDisk> disk_;
  std::unique_ptr<ReactorBitmap> bm_;
  std::unique_ptr<MetaEngine> io_;
  std::error_code ec_;
};

// --- open

TEST_F(ReactorTest, FormatGivesAFileThatOpensWithItsGeometry) {
  open();
  EXPECT_EQ(bm_->chunk_bytes(), kChunk);
  EXPECT_EQ(bm_->chunks(), 16384u);
  EXPECT_EQ(bm_->device_bytes(), 1ull << 30);
  EXPECT_EQ(bm_->daemon_sleep(), 1000ms);
  EXPECT_EQ(bm_->barrier_idle(), 100ms);
  EXPECT_EQ(bm_->state(0), ChunkState::kUnwritten);
  EXPECT_FALSE(bm_->failed());
}

TEST_F(ReactorTest, FormatRefusesABadOption) {
  BitmapOptions o = options();
  o.device_bytes = 0;
  std::error_code ec;
  EXPECT_TRUE(ReactorBitmap::format(o, ec).empty());
  EXPECT_TRUE(ec);
}

// Destroying an open bitmap with nothing in flight is a crash as far as the file is
// concerned: the written chunk reopens NeedSync.
TEST_F(ReactorTest, DestroyWithoutCloseReopensLikeACrash) {
  open_ready();
  {
    ReactorQueue q(*bm_);
    Probe p;
    ASSERT_TRUE(write_admitted(q, 5, p));
    end(5);
  }
  io_->drain();
  ASSERT_TRUE(io_->outstanding().empty());
  io_.reset();
  bm_.reset();  // no abort: no write in flight, nothing outstanding
  std::error_code ec;
  auto again = ReactorBitmap::open(disk_->durable_image(), ReactorOptions{}, ec);
  ASSERT_TRUE(again) << ec.message();
  EXPECT_EQ(again->state(5), ChunkState::kNeedSync);
  EXPECT_EQ(again->state(6), ChunkState::kUnwritten);
}

TEST_F(ReactorTest, WritesArePendingUntilTheOpenRoundIsDurableThenReady) {
  open();
  ASSERT_FALSE(bm_->ready());
  ReactorQueue q(*bm_);
  Probe p;
  p.hook = [&](Probe&) {
    EXPECT_TRUE(bm_->ready());
    EXPECT_TRUE(durably_dirty(0)) << "admitted before its Dirty was durable";
  };
  ASSERT_EQ(start(q, 0, p), Admit::kPending) << ec_.message();
  EXPECT_TRUE(p.pending());
  EXPECT_EQ(q.pending(), 1u);
  const std::uint64_t events0 = durable_events();
  // Complete the open's requests one at a time, polling in between: nothing is admitted
  // and ready() stays false until the second sync completed. The first round makes the
  // recovered states durable; only the second moves the superblock on (clears stale and
  // first-use, the events), so that a crash in between never reopens a first-use file
  // (whose every chunk would read Unwritten) under an admitted write.
  int syncs = 0;
  for (int i = 0; i < 1000 && syncs < 2; ++i) {
    io_->pull();
    ASSERT_FALSE(io_->outstanding().empty()) << "the open's rounds never reached two syncs";
    const MetaEngine::Done d = io_->complete(0);
    ASSERT_FALSE(d.result);
    if (d.kind == MetaIo::Kind::kSync && ++syncs == 2) break;
    if (syncs == 1) {
      EXPECT_EQ(durable_events(), events0) << "the events moved on in the open's first round";
    }
    EXPECT_FALSE(bm_->ready());
    EXPECT_EQ(poll_queue(q), 0u);
  }
  ASSERT_EQ(syncs, 2);
  EXPECT_TRUE(bm_->ready());
  EXPECT_GT(durable_events(), events0) << "the events did not move on in the open's second round";
  ASSERT_TRUE(run_until([&] { return p.calls.load() > 0; }, &q));
  EXPECT_FALSE(p.ec) << p.ec.message();
  EXPECT_TRUE(p.from_poll);
  EXPECT_FALSE(p.pending());
  EXPECT_EQ(bm_->state(0), ChunkState::kDirty);
  end(0);
  io_->drain();
  EXPECT_GT(durable_events(), events0) << "the events never moved on after the open";
}

// --- the write-ahead rule

TEST_F(ReactorTest, FirstWriteIsPendingUntilItsSyncAndASecondIsReadyWithoutIo) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe p;
  p.hook = [&](Probe&) { EXPECT_TRUE(durably_dirty(5)) << "admitted before Dirty was durable"; };
  ASSERT_EQ(start(q, 5, p), Admit::kPending) << ec_.message();
  EXPECT_EQ(bm_->state(5), ChunkState::kDirty);
  EXPECT_FALSE(durably_dirty(5));
  // The round: block write(s), and no sync while one of them is outstanding.
  io_->pull();
  ASSERT_GE(io_->count(MetaIo::Kind::kWrite), 1u);
  EXPECT_EQ(io_->count(MetaIo::Kind::kSync), 0u);
  while (io_->count(MetaIo::Kind::kWrite) > 0) {
    io_->complete(io_->find(MetaIo::Kind::kWrite));
    io_->pull();
    if (io_->count(MetaIo::Kind::kWrite) > 0) {
      EXPECT_EQ(io_->count(MetaIo::Kind::kSync), 0u)
          << "a sync before the round's writes completed";
    }
  }
  EXPECT_EQ(poll_queue(q), 0u) << "admitted before the sync";
  EXPECT_TRUE(p.pending());
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 1u) << "no sync once the round's writes completed";
  io_->complete(io_->find(MetaIo::Kind::kSync));
  EXPECT_EQ(p.calls.load(), 0) << "the callback ran from complete(), not from poll()";
  EXPECT_EQ(poll_queue(q), 1u);
  ASSERT_EQ(p.calls.load(), 1);
  EXPECT_TRUE(p.from_poll);
  EXPECT_FALSE(p.ec) << p.ec.message();
  EXPECT_EQ(p.offset(), 5 * kChunk);
  EXPECT_EQ(p.length(), kChunk);
  EXPECT_EQ(q.pending(), 0u);
  EXPECT_GE(bm_->stats().pending_persist, 1u);

  // The chunk is durably Dirty now: a second write is admitted at once, with no IO.
  Probe p2;
  EXPECT_EQ(start(q, 5, p2), Admit::kReady) << ec_.message();
  MetaIo io;
  EXPECT_FALSE(bm_->next_io(io)) << "a write to a durably Dirty chunk asked for IO";
  EXPECT_FALSE(bm_->io_outstanding());
  end(5);
  end(5);
  EXPECT_EQ(poll_queue(q), 0u);
  EXPECT_EQ(p2.calls.load(), 0);
}

TEST_F(ReactorTest, ARoundsWritesCompleteInAnyOrder) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe a, b, c;
  // Three chunks in three blocks (and pages): one round with several block writes.
  ASSERT_EQ(start(q, 0, a), Admit::kPending);
  ASSERT_EQ(start(q, 5000, b), Admit::kPending);
  ASSERT_EQ(start(q, 10000, c), Admit::kPending);
  io_->pull();
  ASSERT_GE(io_->count(MetaIo::Kind::kWrite), 3u);
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 0u);
  // Last handed out, first completed.
  while (!io_->outstanding().empty()) {
    ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 0u);
    io_->complete(io_->outstanding().size() - 1);
    EXPECT_EQ(poll_queue(q), 0u);
    io_->pull();
    if (io_->count(MetaIo::Kind::kSync) == 1) break;
  }
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 1u);
  ASSERT_EQ(io_->outstanding().size(), 1u);
  EXPECT_EQ(poll_queue(q), 0u);
  io_->complete(0);
  ASSERT_TRUE(run_until([&] { return a.calls + b.calls + c.calls == 3; }, &q));
  EXPECT_FALSE(a.ec || b.ec || c.ec);
  EXPECT_TRUE(durably_dirty(0) && durably_dirty(5000) && durably_dirty(10000));
  end(0);
  end(5000);
  end(10000);
}

// --- ordered_sync: a round's sync handed out behind its writes

TEST_F(ReactorTest, OrderedSyncComesBehindItsWritesInOneCallAndAdmitsOnlyAfterIt) {
  ReactorOptions ro;
  ro.ordered_sync = true;
  open_ready(ro);
  io_->set_batch(16);
  ReactorQueue q(*bm_);
  Probe p;
  p.hook = [&](Probe&) { EXPECT_TRUE(durably_dirty(5)) << "admitted before Dirty was durable"; };
  ASSERT_EQ(start(q, 5, p), Admit::kPending);
  const std::size_t before = io_->handed_out().size();
  const std::uint64_t syncs_before = io_->after_writes_syncs();
  io_->pull();
  // One call: the block and its checksum-table block, then the sync.
  const auto& kinds = io_->handed_out();
  ASSERT_EQ(kinds.size(), before + 3);
  EXPECT_EQ(kinds[before], MetaIo::Kind::kWrite);
  EXPECT_EQ(kinds[before + 1], MetaIo::Kind::kWrite);
  EXPECT_EQ(kinds[before + 2], MetaIo::Kind::kSync);
  EXPECT_EQ(io_->after_writes_syncs(), syncs_before + 1);
  const std::size_t sync = io_->find(MetaIo::Kind::kSync);
  ASSERT_LT(sync, io_->outstanding().size());
  EXPECT_TRUE(io_->outstanding()[sync].after_writes);
  EXPECT_FALSE(io_->startable(sync)) << "the sync may start before its writes completed";
  // The writes complete (last first), then the sync.
  io_->complete(io_->outstanding().size() - 2);
  EXPECT_FALSE(io_->startable(io_->find(MetaIo::Kind::kSync)));
  io_->complete(io_->find(MetaIo::Kind::kWrite));
  EXPECT_EQ(poll_queue(q), 0u) << "admitted before the sync";
  ASSERT_TRUE(io_->startable(io_->find(MetaIo::Kind::kSync)));
  io_->complete(io_->find(MetaIo::Kind::kSync));
  EXPECT_EQ(poll_queue(q), 1u);
  ASSERT_EQ(p.calls.load(), 1);
  EXPECT_FALSE(p.ec) << p.ec.message();
  end(5);
}

TEST_F(ReactorTest, OrderedSyncIsHandedOutLateWhenItsRoundDoesNotFitTheCall) {
  ReactorOptions ro;
  ro.ordered_sync = true;
  open_ready(ro);
  ReactorQueue q(*bm_);
  for (const std::size_t batch : {1u, 2u}) {  // next_io, and a call with no slot to spare
    io_->set_batch(batch);
    Probe p;
    const std::uint64_t chunk = batch * 5000;
    ASSERT_EQ(start(q, chunk, p), Admit::kPending);
    io_->pull();
    EXPECT_EQ(io_->count(MetaIo::Kind::kSync), 0u) << "batch " << batch;
    EXPECT_EQ(io_->after_writes_syncs(), 0u) << "batch " << batch;
    while (io_->count(MetaIo::Kind::kWrite) > 0) io_->complete(io_->find(MetaIo::Kind::kWrite));
    io_->pull();
    ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 1u);
    EXPECT_FALSE(io_->outstanding()[io_->find(MetaIo::Kind::kSync)].after_writes);
    io_->complete(io_->find(MetaIo::Kind::kSync));
    EXPECT_EQ(poll_queue(q), 1u);
    EXPECT_FALSE(p.ec) << p.ec.message();
    end(chunk);
  }
}

TEST_F(ReactorTest, WithoutOrderedSyncNextIosNeverHandsTheSyncOutEarly) {
  open_ready();
  io_->set_batch(16);
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_EQ(start(q, 5, p), Admit::kPending);
  io_->pull();
  EXPECT_GE(io_->count(MetaIo::Kind::kWrite), 1u);
  EXPECT_EQ(io_->count(MetaIo::Kind::kSync), 0u);
  ASSERT_TRUE(run_until([&] { return p.calls.load() > 0; }, &q));
  EXPECT_FALSE(p.ec) << p.ec.message();
  Probe p2;
  ASSERT_TRUE(write_admitted(q, 6000, p2));
  EXPECT_EQ(io_->after_writes_syncs(), 0u);
  end(5);
  end(6000);
}

TEST_F(ReactorTest, OrderedSyncAfterAFailedWriteFailsTheRoundWhenTheSyncCompletes) {
  ReactorOptions ro;
  ro.ordered_sync = true;
  open_ready(ro);
  io_->set_batch(16);
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_EQ(start(q, 0, p), Admit::kPending);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kWrite), 2u);
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 1u);
  disk_->fail_write(1);
  ASSERT_TRUE(io_->complete(io_->find(MetaIo::Kind::kWrite)).result);
  io_->complete(io_->find(MetaIo::Kind::kWrite));
  // The round is not over while its sync is outstanding: no stale mark yet.
  io_->pull();
  EXPECT_EQ(io_->outstanding().size(), 1u);
  EXPECT_EQ(poll_queue(q), 0u);
  // The sync completes cancelled, not performed (a write it follows failed, as io_uring's
  // link does it): the round ends with the write's error.
  const std::size_t sync = io_->find(MetaIo::Kind::kSync);
  ASSERT_TRUE(io_->startable(sync));
  EXPECT_EQ(io_->complete(sync).result, std::errc::operation_canceled);
  EXPECT_EQ(io_->cancelled_syncs(), 1u);
  ASSERT_TRUE(run_until([&] { return bm_->failed() && p.calls.load() > 0; }, &q));
  EXPECT_EQ(p.ec, Errc::bitmap_failed);
  EXPECT_TRUE(test::image_is_stale(disk_->durable_image())) << "the stale mark is not durable";
}

// --- pipelined_rounds: the next round begins while a round's sync is outstanding

// Completes every outstanding kWrite, in the order they were handed out.
void complete_writes(MetaEngine& io) {
  while (io.count(MetaIo::Kind::kWrite) > 0) io.complete(io.find(MetaIo::Kind::kWrite));
}
// The index of the last outstanding kSync (the latest round's).
std::size_t last_sync(const MetaEngine& io) {
  std::size_t k = io.outstanding().size();
  for (std::size_t i = 0; i < io.outstanding().size(); ++i)
    if (io.outstanding()[i].kind == MetaIo::Kind::kSync) k = i;
  return k;
}

TEST_F(ReactorTest, WithoutPipelinedRoundsNoRoundBeginsWhileASyncIsOutstanding) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe a, b;
  ASSERT_EQ(start(q, 5, a), Admit::kPending);
  io_->pull();
  complete_writes(*io_);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 1u);
  ASSERT_EQ(start(q, 5000, b), Admit::kPending);
  io_->pull();
  EXPECT_EQ(io_->count(MetaIo::Kind::kWrite), 0u);
  io_->complete(io_->find(MetaIo::Kind::kSync));
  EXPECT_EQ(poll_queue(q), 1u);
  EXPECT_EQ(a.calls.load(), 1);
  io_->pull();
  EXPECT_EQ(io_->count(MetaIo::Kind::kWrite), 2u);
  ASSERT_TRUE(run_until([&] { return b.calls.load() > 0; }, &q));
  EXPECT_FALSE(b.ec) << b.ec.message();
  end(5);
  end(5000);
}

TEST_F(ReactorTest, APipelinedRoundBeginsDuringASyncAndEachWriteWaitsForItsOwnRound) {
  ReactorOptions ro;
  ro.pipelined_rounds = true;
  open_ready(ro);
  ReactorQueue q(*bm_);
  Probe a, b;  // chunk 5 is in block 0, chunk 5000 in block 1
  a.hook = [&](Probe&) { EXPECT_TRUE(durably_dirty(5)) << "admitted before Dirty was durable"; };
  b.hook = [&](Probe&) { EXPECT_TRUE(durably_dirty(5000)) << "admitted before Dirty was durable"; };
  ASSERT_EQ(start(q, 5, a), Admit::kPending);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kWrite), 2u);
  complete_writes(*io_);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 1u);
  // The first round's sync is outstanding: the next round begins at once.
  ASSERT_EQ(start(q, 5000, b), Admit::kPending);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kWrite), 2u) << "the next round did not begin";
  EXPECT_EQ(io_->count(MetaIo::Kind::kSync), 1u) << "a sync handed out before its writes";
  complete_writes(*io_);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 2u);
  // The later round's sync completes first: its write is admitted, the other still waits
  // for its own round.
  io_->complete(last_sync(*io_));
  EXPECT_EQ(poll_queue(q), 1u);
  EXPECT_EQ(b.calls.load(), 1);
  EXPECT_EQ(a.calls.load(), 0) << "admitted by a round that did not write its block";
  io_->complete(io_->find(MetaIo::Kind::kSync));
  EXPECT_EQ(poll_queue(q), 1u);
  EXPECT_EQ(a.calls.load(), 1);
  EXPECT_FALSE(a.ec || b.ec);
  EXPECT_EQ(bm_->stats().persist_rounds, 2u + 2u);  // open's two rounds, then these
  end(5);
  end(5000);
}

TEST_F(ReactorTest, ARoundCompletingLateNeverLowersTheDurableNumberOfALaterOne) {
  ReactorOptions ro;
  ro.pipelined_rounds = true;
  open_ready(ro);
  ReactorQueue q(*bm_);
  Probe a, b;  // chunks 5 and 6 share block 0
  ASSERT_EQ(start(q, 5, a), Admit::kPending);
  io_->pull();
  complete_writes(*io_);
  io_->pull();
  ASSERT_EQ(start(q, 6, b), Admit::kPending);
  io_->pull();
  complete_writes(*io_);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 2u);
  // The later round's sync made the newer copy of block 0 durable: both writes go.
  io_->complete(last_sync(*io_));
  EXPECT_EQ(poll_queue(q), 2u);
  // The earlier round completes last. Had it published its older change number, a new
  // write of chunk 6 would wait for a persist.
  io_->complete(io_->find(MetaIo::Kind::kSync));
  Probe c;
  EXPECT_EQ(start(q, 6, c), Admit::kReady);
  EXPECT_TRUE(io_->outstanding().empty());
  end(6);
  end(6);
  end(5);
}

TEST_F(ReactorTest, AWriteToADurablyDirtyChunkIsReadyWhileAnotherChunkOfItsBlockPersists) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe a;  // chunks 5 and 6 share block 0
  ASSERT_TRUE(write_admitted(q, 5, a));
  end(5);
  Probe b;
  ASSERT_EQ(start(q, 6, b), Admit::kPending);
  io_->pull();
  ASSERT_GE(io_->count(MetaIo::Kind::kWrite), 1u);  // block 0's newer copy is on its way
  // Chunk 5's Dirty is durable whatever becomes of that copy: admitted at once, no IO.
  Probe c;
  EXPECT_EQ(start(q, 5, c), Admit::kReady) << "waited for a round that changes another chunk";
  EXPECT_TRUE(durably_dirty(5));
  const std::size_t out = io_->outstanding().size();
  EXPECT_EQ(io_->pull(), 0u);
  EXPECT_EQ(io_->outstanding().size(), out);
  ASSERT_TRUE(run_until([&] { return b.calls.load() > 0; }, &q));
  EXPECT_FALSE(b.ec) << b.ec.message();
  end(5);
  end(6);
}

TEST_F(ReactorTest, AChunkWhoseCleanCopyMayStillLandIsNotCovered) {
  ReactorOptions ro;
  ro.pipelined_rounds = true;
  open_ready(ro);
  ReactorQueue q(*bm_);
  Probe a;
  ASSERT_TRUE(write_admitted(q, 5, a));
  end(5);
  // Discarded: Unwritten in memory, still Dirty in the file (persisted lazily).
  Probe d;
  ASSERT_EQ(q.start_discard(5 * kChunk, kChunk, d, ec_), Admit::kReady) << ec_.message();
  bm_->end_discard(5 * kChunk, kChunk);
  // A round for chunk 6 copies block 0 with chunk 5 Unwritten; its writes complete, its
  // sync is outstanding.
  Probe b;
  ASSERT_EQ(start(q, 6, b), Admit::kPending);
  io_->pull();
  complete_writes(*io_);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kSync), 1u);
  // Chunk 5 written again: Dirty in memory, a round of its own. The Unwritten copy may
  // land, so no write of chunk 5 is admitted before that round completes, the one that
  // marked it or a second one that finds it Dirty.
  Probe c, e;
  const auto check = [&](Probe& p) {
    EXPECT_TRUE(durably_dirty(5)) << "admitted while the file may hold chunk 5 Unwritten";
    (void)p;
  };
  c.hook = check;
  e.hook = check;
  ASSERT_EQ(start(q, 5, c), Admit::kPending);
  EXPECT_EQ(bm_->state(5), ChunkState::kDirty);
  EXPECT_EQ(start(q, 5, e), Admit::kPending) << "admitted on the copy made before the discard";
  // The round for chunk 6 completes first: chunk 5 is durably Unwritten, still pending.
  io_->complete(io_->find(MetaIo::Kind::kSync));
  EXPECT_EQ(poll_queue(q), 1u);
  EXPECT_EQ(b.calls.load(), 1);
  EXPECT_EQ(c.calls.load() + e.calls.load(), 0);
  ASSERT_TRUE(run_until([&] { return c.calls.load() + e.calls.load() == 2; }, &q));
  EXPECT_FALSE(c.ec || e.ec);
  end(5);
  end(5);
  end(6);
}

TEST_F(ReactorTest, APipelinedRoundWaitsForTheWritesOfTheRoundBeforeIt) {
  ReactorOptions ro;
  ro.pipelined_rounds = true;
  ro.ordered_sync = true;
  open_ready(ro);
  io_->set_batch(16);
  ReactorQueue q(*bm_);
  Probe a, b;
  ASSERT_EQ(start(q, 5, a), Admit::kPending);
  io_->pull();
  ASSERT_EQ(io_->outstanding().size(), 3u);  // two writes, their sync
  ASSERT_EQ(start(q, 5000, b), Admit::kPending);
  // Two copies of the table block must never be in flight together.
  EXPECT_EQ(io_->pull(), 0u) << "a round began while the last one's writes were outstanding";
  complete_writes(*io_);
  EXPECT_EQ(io_->pull(), 3u);
  EXPECT_EQ(io_->count(MetaIo::Kind::kSync), 2u);
  EXPECT_EQ(io_->after_writes_syncs(), 2u);
  ASSERT_TRUE(run_until([&] { return a.calls.load() + b.calls.load() == 2; }, &q));
  EXPECT_FALSE(a.ec || b.ec);
  end(5);
  end(5000);
}

TEST_F(ReactorTest, AFailedSyncHoldsTheStaleMarkUntilThePipelinedRoundsWritesComplete) {
  ReactorOptions ro;
  ro.pipelined_rounds = true;
  open_ready(ro);
  ReactorQueue q(*bm_);
  Probe a, b;
  ASSERT_EQ(start(q, 5000, a), Admit::kPending);
  io_->pull();
  complete_writes(*io_);
  io_->pull();
  // The next round writes block 0 (the superblock's) while the first round's sync is out.
  ASSERT_EQ(start(q, 0, b), Admit::kPending);
  io_->pull();
  ASSERT_EQ(io_->count(MetaIo::Kind::kWrite), 2u);
  disk_->fail_sync(1);
  ASSERT_TRUE(io_->complete(io_->find(MetaIo::Kind::kSync)).result);
  // The failed state refuses every write waiting for a persist, the later round's too.
  EXPECT_EQ(poll_queue(q), 2u);
  EXPECT_EQ(a.ec, Errc::bitmap_failed);
  EXPECT_EQ(b.ec, Errc::bitmap_failed);
  // A block-0 write of the later round is outstanding: the stale mark must not go out
  // before it, or that write could land over the mark.
  EXPECT_EQ(io_->pull(), 0u) << "the stale mark was handed out before the writes it must follow";
  complete_writes(*io_);
  EXPECT_EQ(io_->pull(), 2u) << "the stale mark's writes";
  io_->drain();
  EXPECT_TRUE(bm_->failed());
  EXPECT_TRUE(test::image_is_stale(disk_->durable_image())) << "the stale mark is not durable";
}

TEST_F(ReactorTest, AnOutOfRangeWriteIsRefused) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe p;
  EXPECT_EQ(q.start_write(options().device_bytes, kChunk, p, ec_), Admit::kRefused);
  EXPECT_EQ(ec_, std::errc::invalid_argument);
  EXPECT_FALSE(p.pending());
}

// --- threads

// A second reactor thread with a queue of its own. It starts a write of chunk 9000 (left
// pending: the test's thread completes the round it waits for), then, once go() is
// called, notes whether its eventfd is readable, polls its queue once and notes it
// again. Its fields are written before a Flag is set and read after it was waited for.
class OtherReactor {
 public:
  static constexpr std::uint64_t kChunkNo = 9000;
  OtherReactor(ReactorBitmap& bm, ReactorQueue::Wake wake)
      : bm_(bm), thread_([this, wake] { run(wake); }) {
    started_.wait();
  }
  OtherReactor(const OtherReactor&) = delete;
  OtherReactor& operator=(const OtherReactor&) = delete;
  ~OtherReactor() {
    go_.set();
    finish_.set();
    thread_.join();
  }
  // Lets the thread look at its eventfd and poll; returns once it has.
  void go() {
    go_.set();
    polled_.wait();
  }

  Probe probe;
  Admit admit = Admit::kRefused;
  int fd = -1;
  bool readable_before = true, readable_at_go = false, readable_after = true;
  std::size_t ran = 0;
  std::thread::id id;

 private:
  void run(ReactorQueue::Wake wake) {
    id = std::this_thread::get_id();
    ReactorQueue q(bm_, wake);
    fd = q.event_fd();
    std::error_code ec;
    admit = q.start_write(kChunkNo * kTestChunk, kTestChunk, probe, ec);
    readable_before = fd >= 0 && readable(fd);
    started_.set();
    go_.wait();
    readable_at_go = fd >= 0 && readable(fd);
    ran = poll_queue(q);
    readable_after = fd >= 0 && readable(fd);
    polled_.set();
    finish_.wait();
    if (probe.calls.load() == 1 && !probe.ec) bm_.end_write(kChunkNo * kTestChunk, kTestChunk);
  }

  ReactorBitmap& bm_;
  test::Flag started_, go_, polled_, finish_;
  std::thread thread_;  // last: it starts once every other member is built
};

TEST_F(ReactorTest, ACompletionOnOneReactorWakesAnotherThroughItsEventfd) {
  open_ready();
  ReactorQueue qa(*bm_);
  OtherReactor b(*bm_, ReactorQueue::Wake::kAlways);
  ASSERT_EQ(b.admit, Admit::kPending);
  Probe pa;
  ASSERT_EQ(start(qa, 1, pa), Admit::kPending);
  io_->drain();  // this thread completes the sync both writes wait for
  EXPECT_EQ(pa.calls.load(), 0) << "a callback ran from complete()";
  EXPECT_EQ(b.probe.calls.load(), 0) << "a callback ran from complete()";
  EXPECT_EQ(poll_queue(qa), 1u);
  EXPECT_EQ(pa.calls.load(), 1);
  EXPECT_EQ(b.probe.calls.load(), 0) << "another queue's poll() ran this queue's callback";
  b.go();
  EXPECT_NE(b.fd, -1);
  EXPECT_FALSE(b.readable_before) << "the eventfd was readable before any work was due";
  EXPECT_TRUE(b.readable_at_go) << "the eventfd did not become readable on the admission";
  EXPECT_EQ(b.ran, 1u);
  EXPECT_FALSE(b.readable_after) << "poll() did not drain the eventfd";
  EXPECT_EQ(b.probe.calls.load(), 1);
  EXPECT_FALSE(b.probe.ec) << b.probe.ec.message();
  EXPECT_TRUE(b.probe.from_poll);
  EXPECT_EQ(b.probe.thread, b.id) << "the callback ran on another thread than its queue's";
  EXPECT_EQ(pa.thread, std::this_thread::get_id());
  end(1);
}

TEST_F(ReactorTest, WakeAlwaysSignalsAWriteMadeDueOnTheQueuesOwnThread) {
  open_ready();
  ReactorQueue q(*bm_);  // Wake::kAlways
  ASSERT_NE(q.event_fd(), -1);
  Probe p;
  ASSERT_EQ(start(q, 1, p), Admit::kPending);
  EXPECT_FALSE(readable(q.event_fd()));
  io_->drain();  // this thread completes the sync
  EXPECT_TRUE(readable(q.event_fd())) << "no signal for a write made due on the owner's thread";
  EXPECT_EQ(poll_queue(q), 1u);
  EXPECT_FALSE(readable(q.event_fd()));
  end(1);
}

TEST_F(ReactorTest, WakeOtherThreadsSignalsOnlyAWriteMadeDueByAnotherThread) {
  open_ready();
  ReactorQueue qa(*bm_, ReactorQueue::Wake::kOtherThreads);
  ASSERT_NE(qa.event_fd(), -1);
  OtherReactor b(*bm_, ReactorQueue::Wake::kOtherThreads);
  ASSERT_EQ(b.admit, Admit::kPending);
  Probe pa;
  ASSERT_EQ(start(qa, 1, pa), Admit::kPending);
  io_->drain();  // this thread completes the sync both writes wait for
  EXPECT_FALSE(readable(qa.event_fd())) << "a write made due on the owner's thread signalled";
  EXPECT_EQ(pa.calls.load(), 0);
  EXPECT_EQ(poll_queue(qa), 1u) << "the owner's poll() did not find its due write";
  EXPECT_EQ(pa.calls.load(), 1);
  b.go();
  EXPECT_TRUE(b.readable_at_go) << "a write made due by another thread did not signal";
  EXPECT_EQ(b.ran, 1u);
  EXPECT_FALSE(b.readable_after) << "poll() did not drain the eventfd";
  EXPECT_EQ(b.probe.calls.load(), 1);
  end(1);
}

// --- the cleaning pass

TEST_F(ReactorTest, TheCleaningPassCleansAnIdlePageAndPersistsClean) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_TRUE(write_admitted(q, 0, p));
  end(0);
  io_->drain();
  bm_->step();
  EXPECT_EQ(bm_->state(0), ChunkState::kDirty) << "cleaned before daemon_sleep";
  expire();
  // The pass ends (the page resumed, pages_cleaned counted) at a step after the persist.
  ASSERT_TRUE(run_until([&] {
    return bm_->state(0) == ChunkState::kClean && durable(0) == ChunkState::kClean &&
           !bm_->io_outstanding() && bm_->stats().pages_cleaned >= 1;
  }));
  EXPECT_EQ(bm_->stats().daemon_passes, 1u);
  EXPECT_EQ(bm_->stats().pages_cleaned, 1u);
  // A write to the Clean chunk must persist Dirty again.
  Probe p2;
  EXPECT_EQ(start(q, 0, p2), Admit::kPending);
  ASSERT_TRUE(run_until([&] { return p2.calls.load() > 0; }, &q));
  end(0);
}

TEST_F(ReactorTest, AWriteInFlightKeepsThePageDrainingAndAWriteMeetingItWaits) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe pa, pb;
  ASSERT_TRUE(write_admitted(q, 0, pa));
  end(0);
  ASSERT_TRUE(write_admitted(q, 1, pb));  // chunk 1 stays in flight, same page
  io_->drain();
  expire();
  bm_->step();  // picks page 0 and kills it
  Probe pc;
  pc.hook = [&](Probe&) {
    EXPECT_EQ(durable(0), ChunkState::kClean) << "resumed before Clean was durable";
    EXPECT_TRUE(durably_dirty(2)) << "admitted before Dirty was durable";
  };
  ASSERT_EQ(start(q, 2, pc), Admit::kPending) << "a write met a page being cleaned";
  EXPECT_GE(bm_->stats().pending_page, 1u);
  for (int i = 0; i < 2000; ++i) {
    bm_->step();
    io_->drain();
    poll_queue(q);
    std::this_thread::yield();
  }
  EXPECT_EQ(bm_->state(0), ChunkState::kDirty) << "cleaned while a write of its page was in flight";
  EXPECT_EQ(pc.calls.load(), 0) << "admitted on a page still draining";
  end(1);
  ASSERT_TRUE(run_until([&] { return pc.calls.load() > 0; }, &q));
  EXPECT_FALSE(pc.ec) << pc.ec.message();
  EXPECT_EQ(bm_->state(0), ChunkState::kClean);
  EXPECT_EQ(bm_->state(1), ChunkState::kClean);
  EXPECT_EQ(bm_->state(2), ChunkState::kDirty);
  EXPECT_EQ(bm_->stats().suspend_timeouts, 0u);
  end(2);
}

TEST_F(ReactorTest, AWriteOutlivingDaemonSleepGivesThePageUp) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe pa, pb;
  ASSERT_TRUE(write_admitted(q, 0, pa));
  end(0);
  ASSERT_TRUE(write_admitted(q, 1, pb));  // never ends during the pass
  io_->drain();
  expire();
  bm_->step();
  Probe pc;
  ASSERT_EQ(start(q, 2, pc), Admit::kPending);
  // Let the grace period end, then outlive daemon_sleep.
  ASSERT_TRUE(run_until(
      [&] {
        clock_.advance(10ms);
        return bm_->stats().suspend_timeouts > 0;
      },
      &q));
  ASSERT_TRUE(run_until([&] { return pc.calls.load() > 0; }, &q));
  EXPECT_FALSE(pc.ec) << pc.ec.message();
  EXPECT_TRUE(is_dirty_like(bm_->state(1))) << "a page given up lost the Dirty of its write";
  end(1);
  end(2);
}

TEST_F(ReactorTest, TheDataFlushComesBeforeTheCleanPersist) {
  ReactorOptions ro;
  ro.data_flush = true;
  open_ready(ro);
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_TRUE(write_admitted(q, 0, p));
  end(0);
  io_->drain();
  const std::size_t mark = io_->handed_out().size();
  std::vector<std::optional<ChunkState>> at_flush;
  io_->set_hook([&](const MetaEngine::Done& d) {
    if (d.kind == MetaIo::Kind::kDataFlush) at_flush.push_back(durable(0));
  });
  expire();
  ASSERT_TRUE(
      run_until([&] { return durable(0) == ChunkState::kClean && !bm_->io_outstanding(); }));
  io_->set_hook({});
  const auto& kinds = io_->handed_out();
  ASSERT_GT(kinds.size(), mark);
  EXPECT_EQ(kinds[mark], MetaIo::Kind::kDataFlush)
      << "the pass's first request was " << test::kind_name(kinds[mark]);
  ASSERT_EQ(at_flush.size(), 1u);
  EXPECT_EQ(at_flush[0], ChunkState::kDirty) << "Clean was durable before the data flush";
  EXPECT_EQ(bm_->stats().data_flushes, 1u);
}

TEST_F(ReactorTest, AFailedDataFlushKeepsTheChunksDirtyAndALaterPassCleansThem) {
  ReactorOptions ro;
  ro.data_flush = true;
  open_ready(ro);
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_TRUE(write_admitted(q, 0, p));
  end(0);
  io_->drain();
  io_->set_data_flush_result(std::make_error_code(std::errc::io_error));
  expire();
  ASSERT_TRUE(run_until([&] { return io_->flushes() >= 1 && !bm_->io_outstanding(); }));
  for (int i = 0; i < 2000; ++i) {
    bm_->step();
    io_->drain();
    std::this_thread::yield();
  }
  EXPECT_EQ(io_->flushes(), 1u) << "the failed flush was retried before daemon_sleep";
  EXPECT_EQ(bm_->state(0), ChunkState::kDirty);
  EXPECT_EQ(durable(0), ChunkState::kDirty);
  EXPECT_FALSE(bm_->failed()) << "a failed data flush failed the bitmap";
  // The page was resumed: a write to the chunk is admitted at once.
  Probe p2;
  EXPECT_EQ(start(q, 0, p2), Admit::kReady) << ec_.message();
  end(0);
  io_->set_data_flush_result({});
  expire();
  ASSERT_TRUE(run_until([&] {
    return bm_->state(0) == ChunkState::kClean && durable(0) == ChunkState::kClean &&
           !bm_->io_outstanding();
  }));
  EXPECT_EQ(io_->flushes(), 2u);
}

TEST_F(ReactorTest, BeginFlushCleansWithoutWaitingForExpiry) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_TRUE(write_admitted(q, 0, p));
  end(0);
  bm_->begin_flush();
  ASSERT_TRUE(run_until([&] { return bm_->flushed(); }));
  EXPECT_FALSE(bm_->flush_result()) << bm_->flush_result().message();
  EXPECT_EQ(bm_->state(0), ChunkState::kClean);
  EXPECT_EQ(durable(0), ChunkState::kClean);
}

// --- the failure rule

TEST_F(ReactorTest, AFailedWriteRefusesPendingWritesAndMarksTheFileStale) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_EQ(start(q, 0, p), Admit::kPending);
  io_->pull();
  ASSERT_GE(io_->count(MetaIo::Kind::kWrite), 1u);
  disk_->fail_write(1);
  const std::size_t mark = io_->handed_out().size();
  const MetaEngine::Done d = io_->complete(0);
  ASSERT_TRUE(d.result);
  EXPECT_FALSE(bm_->failed()) << "failed() before the stale mark was written";
  ASSERT_TRUE(run_until([&] { return bm_->failed() && p.calls.load() > 0; }, &q));
  EXPECT_EQ(p.ec, Errc::bitmap_failed);
  const auto& kinds = io_->handed_out();
  ASSERT_GE(kinds.size(), mark + 3);
  EXPECT_EQ(kinds[kinds.size() - 3], MetaIo::Kind::kWrite);
  EXPECT_EQ(kinds[kinds.size() - 2], MetaIo::Kind::kWrite);
  EXPECT_EQ(kinds.back(), MetaIo::Kind::kSync);
  EXPECT_TRUE(test::image_is_stale(disk_->durable_image())) << "the stale mark is not durable";
  Probe p2;
  EXPECT_EQ(start(q, 1, p2), Admit::kRefused);
  EXPECT_EQ(ec_, Errc::bitmap_failed);
}

TEST_F(ReactorTest, AFailedSyncFailsTheBitmap) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_EQ(start(q, 0, p), Admit::kPending);
  disk_->fail_sync(1);
  bool failed_seen_early = false;
  io_->set_hook([&](const MetaEngine::Done& d) {
    if (d.kind == MetaIo::Kind::kSync && d.result && bm_->failed()) failed_seen_early = true;
  });
  ASSERT_TRUE(run_until([&] { return bm_->failed() && p.calls.load() > 0; }, &q));
  EXPECT_FALSE(failed_seen_early) << "failed() before the stale mark was written";
  EXPECT_EQ(p.ec, Errc::bitmap_failed);
  EXPECT_TRUE(test::image_is_stale(disk_->durable_image()));
  Probe p2;
  EXPECT_EQ(start(q, 1, p2), Admit::kRefused);
  EXPECT_EQ(ec_, Errc::bitmap_failed);
}

// --- close

TEST_F(ReactorTest, CloseWithNoWriteInFlightCleansAndTheImageReopensClean) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_TRUE(write_admitted(q, 0, p));
  end(0);
  bm_->begin_close();
  std::error_code result;
  ASSERT_TRUE(run_until([&] {
    return bm_->close_state(result) == ReactorBitmap::CloseState::kClosed && !bm_->io_outstanding();
  }));
  EXPECT_FALSE(result) << result.message();
  EXPECT_EQ(bm_->state(0), ChunkState::kClean);
  Probe p2;
  EXPECT_EQ(start(q, 0, p2), Admit::kRefused);
  EXPECT_EQ(ec_, Errc::bitmap_closed);
  Probe p3;
  EXPECT_EQ(q.start_discard(0, kChunk, p3, ec_), Admit::kRefused);
  EXPECT_EQ(ec_, Errc::bitmap_closed);

  const std::vector<std::byte> image = disk_->durable_image();
  EXPECT_FALSE(test::image_is_stale(image));
  EXPECT_EQ(durable(0), ChunkState::kClean);
  std::error_code ec;
  std::unique_ptr<ReactorBitmap> again = ReactorBitmap::open(image, ReactorOptions{}, ec);
  ASSERT_TRUE(again) << ec.message();
  EXPECT_TRUE(again->needs_sync().empty());
  EXPECT_EQ(again->counts().need_sync, 0u);
  EXPECT_EQ(again->counts().dirty, 0u);
  EXPECT_EQ(again->state(0), ChunkState::kClean);
  MetaDisk disk2(image);
  MetaEngine io2(*again, disk2, 7);
  io2.drain();
  EXPECT_TRUE(again->ready());
  again->begin_close();
  for (int i = 0; i < kCap; ++i) {
    std::error_code r;
    if (again->close_state(r) == ReactorBitmap::CloseState::kClosed && !again->io_outstanding())
      break;
    again->step();
    io2.drain();
    std::this_thread::yield();
  }
}

TEST_F(ReactorTest, CloseWithAWriteInFlightIsBusyAndTheBitmapStaysUsable) {
  open_ready();
  // The close's wait advances the fake clock 10 ms a turn for as many turns as its grace
  // period takes in real time (many under a sanitizer on a loaded machine). With the
  // default daemon_sleep a regular pass could then be due right after the busy close and
  // kill page 0 under the write in flight, and the second write would wait for that pass,
  // whose drain allowance never runs out on a clock this test no longer moves.
  ASSERT_FALSE(bm_->set_daemon_sleep(kMaxInterval));
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_TRUE(write_admitted(q, 0, p));  // in flight through the close
  bm_->begin_close();
  std::error_code result;
  ReactorBitmap::CloseState st = ReactorBitmap::CloseState::kClosing;
  ASSERT_TRUE(run_until([&] {
    st = bm_->close_state(result);
    if (st != ReactorBitmap::CloseState::kClosing) return true;
    clock_.advance(10ms);  // the drain allowance runs on the bitmap's clock
    return false;
  }));
  EXPECT_EQ(result, Errc::busy) << result.message();
  EXPECT_EQ(st, ReactorBitmap::CloseState::kOpen) << "a busy close did not leave the bitmap open";
  // Still usable: a write to another chunk is admitted.
  Probe p2;
  ASSERT_TRUE(write_admitted(q, 1, p2)) << ec_.message();
  end(1);
  end(0);
  // TearDown closes it again, now with no write in flight.
}

// --- discard

// A write whose range overlaps a discard started before it (both pending until the
// open's round is durable) is admitted only with its chunks durably Dirty, whatever the
// discard does to them meanwhile.
TEST_F(ReactorTest, AWriteOverlappingAPendingDiscardIsAdmittedOnlyOnceItsDirtyIsDurable) {
  open();
  ReactorQueue q(*bm_);
  Probe d, w;
  w.hook = [&](Probe& p) {
    if (p.ec) return;
    for (std::uint64_t c = 11; c < 14; ++c) {
      EXPECT_TRUE(durably_dirty(c))
          << "chunk " << c << " admitted while durably "
          << (durable(c) ? std::string(to_string(*durable(c))) : std::string("unverifiable"));
      EXPECT_TRUE(is_dirty_like(bm_->state(c)))
          << "chunk " << c << " is " << to_string(bm_->state(c)) << " under an admitted write";
    }
  };
  const Admit ad = q.start_discard(10 * kChunk, 3 * kChunk, d, ec_);  // chunks 10-12
  ASSERT_NE(ad, Admit::kRefused) << ec_.message();
  ASSERT_EQ(start(q, 11, w, 3), Admit::kPending) << ec_.message();  // chunks 11-13
  ASSERT_TRUE(run_until(
      [&] { return (ad == Admit::kReady || d.calls.load() > 0) && w.calls.load() > 0; }, &q));
  EXPECT_FALSE(d.ec) << d.ec.message();
  EXPECT_FALSE(w.ec) << w.ec.message();
  bm_->end_discard(10 * kChunk, 3 * kChunk);
  end(11, 3);
}

TEST_F(ReactorTest, ADiscardNeverWaitsForAPersist) {
  open_ready();
  ReactorQueue q(*bm_);
  Probe p;
  ASSERT_TRUE(write_admitted(q, 0, p));
  end(0);
  Probe d1;
  ASSERT_EQ(q.start_discard(0, kChunk, d1, ec_), Admit::kReady) << ec_.message();
  bm_->end_discard(0, kChunk);
  EXPECT_EQ(bm_->state(0), ChunkState::kUnwritten);
  // Half a chunk: not fully covered, the chunk keeps its state.
  Probe p2;
  ASSERT_TRUE(write_admitted(q, 3, p2));
  end(3);
  Probe d2;
  ASSERT_EQ(q.start_discard(3 * kChunk, kChunk / 2, d2, ec_), Admit::kReady) << ec_.message();
  bm_->end_discard(3 * kChunk, kChunk / 2);
  EXPECT_EQ(bm_->state(3), ChunkState::kDirty);
  // A discard of a chunk never written.
  Probe d3;
  ASSERT_EQ(q.start_discard(100 * kChunk, kChunk, d3, ec_), Admit::kReady) << ec_.message();
  bm_->end_discard(100 * kChunk, kChunk);
  EXPECT_EQ(bm_->state(100), ChunkState::kUnwritten);
  EXPECT_EQ(d1.calls + d2.calls + d3.calls, 0);
}

}  // namespace
}  // namespace llbitmap
