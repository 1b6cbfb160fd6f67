// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Crash-state enumeration for the reactor driver (docs/testing.md#reactor-driver): the
// S1 and write-ahead checks of crash_enum_test.cc (docs/design.md#safety-invariants),
// with a ReactorBitmap whose metadata IO a MetaEngine (tests/support/meta_engine.h)
// performs on a FaultStorage and completes in a seeded random order.
//
// A single-threaded driver plays random workloads: up to 3 writers, each with at most one
// write or discard pending or in flight, on ranges of 1-3 chunks in the first pages
// (page and block boundaries favoured), end_write, step() with a fake clock that moves
// by random amounts (so passes run, some with a write in flight), begin_flush, discards,
// some IO completed between operations in random order, a data flush that may fail
// (ReactorOptions::data_flush), and in some workloads one failed block write or sync.
//
// After EVERY metadata completion, every image a crash then could leave (the durable
// image, every subset of the unsynced writes up to 2^6 and samples beyond, reversed,
// omit-one-keep-later, each write torn at 512 B and 4 KiB: tests/support/crash_images.h)
// is opened with Bitmap::open and must:
//
//   - open (the file was complete before the workload began);
//   - show every chunk that must be recovered Dirty-like (NeedSync after recovery):
//     every chunk with an admitted data write (kReady or an admitting callback) not yet
//     ended, and, with data_flush, every chunk whose write ended after the last data
//     flush that completed successfully was handed out (its data may not be durable).
//
// At every admission (kReady return or admitting callback) the durable image must already
// hold every chunk of the range Dirty or NeedSync in a block that verifies (write-ahead).
// A failed bitmap must have a stale superblock once failed() is true. At the end every
// write is ended and the bitmap closed: a clean close leaves no Dirty-like chunk.
//
// A self-test runs the same workloads over a disk that acknowledges every other sync
// without doing it: the checker must find violations there.
//
// Size: LLBM_CRASH_SCALE scales the number of workloads, LLBM_CRASH_SEED sets the base
// seed, LLBM_CRASH_ONLY=<seed> replays one workload, `--exhaustive` (or
// LLBM_CRASH_EXHAUSTIVE=1) runs ten times the workloads, longer ones, subsets up to 2^10
// (ctest reactor_crash_exhaustive, label soak).
#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/clock.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/reactor.h>
#include <llbitmap/testing/fault_storage.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "crash_knobs.h"
#include "image_states.h"
#include "meta_disk.h"
#include "meta_engine.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LLBM_RCRASH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LLBM_RCRASH_SANITIZED 1
#endif
#endif

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
using test::MetaDisk;
using test::MetaEngine;

struct RunSize {
  int workloads = 0;
  int ops_min = 60, ops_max = 160;
  test::CrashImageLimits images;
  std::uint64_t base_seed = 0;
  std::optional<std::uint64_t> only;
};

RunSize run_size() {
#if defined(LLBM_RCRASH_SANITIZED)
  const int workloads = 60;
#elif !defined(NDEBUG)
  const int workloads = 200;
#else
  const int workloads = 1000;
#endif
  const test::CrashKnobs k = test::crash_knobs(workloads, 0x72656163745f6372ULL);
  RunSize r;
  r.workloads = k.workloads;
  r.base_seed = k.base_seed;
  r.only = k.only;
  if (k.exhaustive) {
    r.ops_min = 120;
    r.ops_max = 300;
    r.images.exhaustive_writes = 10;
    r.images.samples = 1000;
  }
  return r;
}

struct Totals {
  std::uint64_t workloads = 0, ops = 0, completions = 0, images = 0, opened = 0, must_checks = 0,
                admissions = 0, pending_admissions = 0, refusals = 0, passes = 0, data_flushes = 0,
                failed_flushes = 0, failed_bitmaps = 0, discards = 0, violations = 0;
  std::string summary() const {
    char buf[1024];
    std::snprintf(
        buf, sizeof buf,
        "reactor-crash: workloads %" PRIu64 ", ops %" PRIu64 ", completions %" PRIu64
        ", crash images checked %" PRIu64 " (%" PRIu64 " distinct opened), must checks %" PRIu64
        ", admissions checked %" PRIu64 " (%" PRIu64 " after kPending), refusals %" PRIu64
        ", passes %" PRIu64 ", data flushes %" PRIu64 " (%" PRIu64
        " failed), failed bitmaps %" PRIu64 ", discards %" PRIu64 ", violations %" PRIu64,
        workloads, ops, completions, images, opened, must_checks, admissions, pending_admissions,
        refusals, passes, data_flushes, failed_flushes, failed_bitmaps, discards, violations);
    return buf;
  }
};

struct Config {
  const char* name;
  std::uint64_t device, chunk, space;
  std::uint32_t block;
};

constexpr Config kConfigs[] = {
    {"1GiB/64KiB chunks/4KiB blocks", 1ull << 30, 64 << 10, 128 << 10, 4096},
    {"48MiB/4KiB chunks/512B blocks", 48ull << 20, 4 << 10, 16 << 10, 512},
};

enum class DiskMode { kHonest, kSkipsSyncs };

class Workload;

// One writer's ReactorWrite; the callback reports to its workload.
struct Slot : ReactorWrite {
  Slot() : ReactorWrite(&Slot::on_admit) {}
  static void on_admit(ReactorWrite& w, std::error_code ec);
  enum class St { kIdle, kPending, kInFlight } st = St::kIdle;
  Workload* owner = nullptr;
  bool is_discard = false;
  std::uint64_t first = 0, count = 0;  // chunks
};

class Workload {
 public:
  Workload(std::uint64_t seed, const RunSize& size, Totals& totals, DiskMode mode)
      : seed_(seed), size_(size), totals_(totals), mode_(mode), rng_(seed) {}

  void run() {
    cfg_ = &kConfigs[rng_() % std::size(kConfigs)];
    BitmapOptions o;
    o.device_bytes = cfg_->device;
    o.chunk_bytes = cfg_->chunk;
    o.space_bytes = cfg_->space;
    o.block_bytes = cfg_->block;
    o.daemon_sleep = 1000ms;
    o.barrier_idle = 50ms;
    o.assume_clean = rng_() % 5 == 0;
    std::error_code ec;
    const std::vector<std::byte> file = ReactorBitmap::format(o, ec);
    ASSERT_FALSE(ec) << ec.message();
    data_flush_ = rng_() % 2 == 0;
    const int fault = static_cast<int>(rng_() % 8);  // 0: a write fails, 1: a sync fails
    disk_ = std::make_unique<MetaDisk>(file);
    ReactorOptions ro;
    ro.data_flush = data_flush_;
    ro.clock = &clock_;
    // Half the seeds hand a round's sync out behind its writes (after_writes, completed
    // only once they have); a quarter take requests in batches without it.
    ro.ordered_sync = (seed_ & 2) != 0;
    // Half the seeds let the next round begin while a round's sync is outstanding.
    ro.pipelined_rounds = (seed_ & 8) != 0;
    pipelined_ = ro.pipelined_rounds;
    bm_ = ReactorBitmap::open(file, ro, ec);
    ASSERT_TRUE(bm_) << ec.message();
    chunk_ = cfg_->chunk;
    chunks_ = bm_->chunks();
    io_ = std::make_unique<MetaEngine>(*bm_, *disk_, seed_ ^ 0x10);
    io_->set_batch(ro.ordered_sync ? 16 : (seed_ & 4) != 0 ? 4 : 1);
    io_->set_skip_syncs(mode_ == DiskMode::kSkipsSyncs);
    io_->set_hook([this](const MetaEngine::Done& d) { on_complete(d); });
    io_->set_handed_hook([this](const MetaEngine::Done& d) {
      if (d.kind == MetaIo::Kind::kDataFlush) flush_handed_[d.id] = end_seq_;
    });
    {
      auto q = std::make_unique<ReactorQueue>(*bm_);
      q_ = q.get();
      const std::size_t n = 1 + rng_() % 3;
      for (std::size_t i = 0; i < n; ++i) {
        slots_.push_back(std::make_unique<Slot>());
        slots_.back()->owner = this;
      }
      const int ops =
          size_.ops_min + static_cast<int>(rng_() % (size_.ops_max - size_.ops_min + 1));
      const int fault_at = static_cast<int>(rng_() % static_cast<std::uint64_t>(ops));
      for (int i = 0; i < ops; ++i) {
        where_ = "op " + std::to_string(i);
        if (i == fault_at && fault == 0) disk_->fail_write(1 + rng_() % 3);
        if (i == fault_at && fault == 1) disk_->fail_sync(1 + rng_() % 2);
        one_op();
        ++totals_.ops;
      }
      where_ = "finish";
      finish(*q);
      q_ = nullptr;
      if (!all_idle()) {  // destroying them would abort: leak, the violation is reported
        for (auto& s : slots_) (void)s.release();
        (void)q.release();
        (void)bm_.release();
        (void)io_.release();
        return;
      }
    }
    // Destroy only a closed bitmap (its destructor aborts otherwise).
    std::error_code r;
    if (bm_->close_state(r) != ReactorBitmap::CloseState::kClosed || bm_->io_outstanding() ||
        io_->pull() != 0) {
      violation("the bitmap did not close: leaked");
      (void)bm_.release();
      (void)io_.release();
      return;
    }
    if (!io_->violations().empty()) violation("engine: " + io_->violations().front());
    io_.reset();
    bm_.reset();
    ++totals_.workloads;
  }

  void admitted(Slot& s, std::error_code ec) {
    if (ec) {
      ++totals_.refusals;
      s.st = Slot::St::kIdle;
      return;
    }
    ++totals_.pending_admissions;
    admit(s);
  }

  int violations() const { return violations_; }

 private:
  void violation(const std::string& what) {
    ++totals_.violations;
    ++violations_;
    if (mode_ == DiskMode::kSkipsSyncs) return;
    if (violations_ <= 6)
      ADD_FAILURE() << "workload seed 0x" << std::hex << seed_ << std::dec << " (" << cfg_->name
                    << (data_flush_ ? ", data_flush" : "") << "), " << where_ << ": " << what
                    << "\n  replay: LLBM_CRASH_ONLY=0x" << std::hex << seed_;
  }

  // A range starting near a page or block boundary half of the time.
  std::uint64_t pick_first(std::uint64_t count) {
    const std::uint64_t limit = std::min<std::uint64_t>(chunks_, 4 * 4096) - count;
    if (rng_() % 2 == 0) {
      const std::uint64_t unit = rng_() % 2 == 0 ? 4096 : cfg_->block;
      // Chunk c's state sits at byte c + 1024 of the image.
      const std::uint64_t k = 1 + rng_() % 3;
      const std::int64_t base = static_cast<std::int64_t>(k * unit) - 1024;
      const std::int64_t c = base - 2 + static_cast<std::int64_t>(rng_() % 4);
      if (c >= 0 && static_cast<std::uint64_t>(c) <= limit) return static_cast<std::uint64_t>(c);
    }
    return rng_() % (limit + 1);
  }

  bool all_idle() const {
    for (const auto& s : slots_)
      if (s->st != Slot::St::kIdle) return false;
    return true;
  }

  bool overlaps_discard(std::uint64_t first, std::uint64_t count) const {
    for (const auto& sp : slots_)
      if (const Slot& s = *sp; s.is_discard && s.st != Slot::St::kIdle &&
                               first < s.first + s.count && s.first < first + count)
        return true;
    return false;
  }

  bool overlaps_busy(std::uint64_t first, std::uint64_t count) const {
    for (const auto& sp : slots_)
      if (const Slot& s = *sp;
          s.st != Slot::St::kIdle && first < s.first + s.count && s.first < first + count)
        return true;
    return false;
  }

  void one_op() {
    if (data_flush_ && rng_() % 10 == 0)  // the data flush fails for a while
      io_->set_data_flush_result(rng_() % 3 == 0 ? std::make_error_code(std::errc::io_error)
                                                 : std::error_code{});
    const unsigned r = static_cast<unsigned>(rng_() % 100);
    Slot& s = *slots_[rng_() % slots_.size()];
    if (r < 30) {  // start a write or a discard on an idle slot
      if (s.st != Slot::St::kIdle) return;
      const std::uint64_t count = 1 + rng_() % 3;
      const std::uint64_t first = pick_first(count);
      const bool discard = rng_() % 6 == 0;
      // A discard and a write of the same chunk at once have no defined outcome.
      if (discard ? overlaps_busy(first, count) : overlaps_discard(first, count)) return;
      s.first = first;
      s.count = count;
      s.is_discard = discard;
      // From the call on, the discard may turn the chunks Unwritten: their old data needs
      // no recovery any more.
      if (discard)
        for (std::uint64_t c = first; c < first + count; ++c) unflushed_.erase(c);
      std::error_code ec;
      const Admit a = discard ? q_->start_discard(first * chunk_, count * chunk_, s, ec)
                              : q_->start_write(first * chunk_, count * chunk_, s, ec);
      if (a == Admit::kRefused) {
        ++totals_.refusals;
        if (ec != Errc::bitmap_failed && ec != Errc::bitmap_closed)
          violation("start refused with '" + ec.message() + "'");
        return;
      }
      if (a == Admit::kPending) {
        s.st = Slot::St::kPending;
        return;
      }
      admit(s);
    } else if (r < 50) {  // end a write or discard
      if (s.st != Slot::St::kInFlight) return;
      end(s);
    } else if (r < 80) {  // complete some IO
      io_->pull();
      const int n = 1 + static_cast<int>(rng_() % 4);
      for (int i = 0; i < n && io_->complete_one(); ++i) io_->pull();
    } else if (r < 90) {  // the clock moves, a step
      const auto d = std::chrono::milliseconds(rng_() % 3 == 0 ? 1100 : rng_() % 120);
      clock_.advance(d);
      bm_->step();
    } else if (r < 93) {
      bm_->begin_flush();
    } else {
      bm_->step();
    }
    // A reactor polls its queue at every turn of its loop.
    if (rng_() % 4 != 0) q_->poll();
    check_failed();
  }

  void admit(Slot& s) {
    s.st = Slot::St::kInFlight;
    if (s.is_discard) {
      ++totals_.discards;
      return;
    }
    ++totals_.admissions;
    const auto st = test::image_states(disk_->durable_image());
    for (std::uint64_t c = s.first; c < s.first + s.count; ++c) {
      // With pipelined rounds a later round's block write may be durable (through an
      // earlier round's sync) without its checksum-table write: the block is then
      // unverifiable, and a crash now resyncs every chunk of it, this one included.
      if (pipelined_ && c < st.size() && !st[c]) continue;
      if (c >= st.size() || !st[c] || !is_dirty_like(static_cast<ChunkState>(*st[c]))) {
        violation("write-ahead: a write of chunks [" + std::to_string(s.first) + ", " +
                  std::to_string(s.first + s.count) + ") admitted while chunk " +
                  std::to_string(c) + " is not durably Dirty (" +
                  (c < st.size() && st[c] ? std::string(to_string(static_cast<ChunkState>(*st[c])))
                                          : std::string("unverifiable")) +
                  ")");
        break;
      }
    }
    for (std::uint64_t c = s.first; c < s.first + s.count; ++c) ++inflight_[c];
  }

  void end(Slot& s) {
    if (s.is_discard) {
      bm_->end_discard(s.first * chunk_, s.count * chunk_);
    } else {
      bm_->end_write(s.first * chunk_, s.count * chunk_);
      ++end_seq_;
      for (std::uint64_t c = s.first; c < s.first + s.count; ++c) {
        if (--inflight_[c] == 0) inflight_.erase(c);
        if (data_flush_) unflushed_[c] = end_seq_;
      }
    }
    s.st = Slot::St::kIdle;
  }

  std::set<std::uint64_t> must() const {
    std::set<std::uint64_t> m;
    for (const auto& [c, n] : inflight_) m.insert(c);
    for (const auto& [c, seq] : unflushed_) m.insert(c);
    return m;
  }

  void on_complete(const MetaEngine::Done& d) {
    ++totals_.completions;
    if (d.kind == MetaIo::Kind::kDataFlush) {
      ++totals_.data_flushes;
      if (d.result) {
        ++totals_.failed_flushes;
      } else {
        // Covers the writes ended before it was handed out.
        const std::uint64_t upto = flush_handed_.count(d.id) ? flush_handed_[d.id] : 0;
        for (auto it = unflushed_.begin(); it != unflushed_.end();)
          it = it->second <= upto ? unflushed_.erase(it) : std::next(it);
      }
      flush_handed_.erase(d.id);
    }
    check_images("after completing " + std::string(test::kind_name(d.kind)) + " #" +
                 std::to_string(d.id) + (d.result ? " (failed)" : ""));
  }

  void check_images(const std::string& when) {
    const std::set<std::uint64_t> m = must();
    // The open's first rounds write every block: their images only need to open (nothing
    // is admitted yet), so they are sampled (the durable image, everything landed).
    test::CrashImageLimits lim = size_.images;
    lim.quick = !bm_->ready();
    for (const test::CrashImage& img : disk_->crash_images(lim, rng_)) {
      ++totals_.images;
      const std::vector<std::uint8_t>* states = open_image(img.bytes);
      if (states == nullptr) {
        violation(when + ": crash image (" + img.what + ") does not open");
        continue;
      }
      for (const std::uint64_t c : m) {
        ++totals_.must_checks;
        const auto s = static_cast<ChunkState>((*states)[c]);
        if (!is_dirty_like(s)) {
          violation(
              when + ": crash image (" + img.what + ") reopens chunk " + std::to_string(c) + " " +
              std::string(to_string(s)) + " although " +
              (inflight_.count(c) ? "a write to it is in flight" : "its data is not flushed"));
          break;
        }
      }
    }
  }

  // The chunk states Bitmap::open recovers from `img` (cached), or nullptr if it refuses.
  const std::vector<std::uint8_t>* open_image(const std::vector<std::byte>& img) {
    const std::string_view bytes(reinterpret_cast<const char*>(img.data()), img.size());
    const std::size_t key = std::hash<std::string_view>{}(bytes);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second ? &*it->second : nullptr;
    ++totals_.opened;
    std::optional<std::vector<std::uint8_t>> states;
    OpenOptions oo;
    oo.start_daemon = false;
    std::error_code ec;
    std::unique_ptr<Bitmap> b = Bitmap::open(std::make_unique<FaultStorage>(img), oo, ec);
    if (b) {
      states.emplace(b->chunks());
      for (std::uint64_t c = 0; c < b->chunks(); ++c) (*states)[c] = to_byte(b->state(c));
      (void)b->close();
    }
    it = cache_.emplace(key, std::move(states)).first;
    return it->second ? &*it->second : nullptr;
  }

  void check_failed() {
    if (!bm_->failed() || failed_seen_) return;
    failed_seen_ = true;
    ++totals_.failed_bitmaps;
    // The injected fault hits one call; the stale mark's sync after it succeeds.
    if (mode_ == DiskMode::kHonest && !test::image_is_stale(disk_->durable_image()))
      violation("failed() is true but the durable superblock is not stale");
  }

  // Ends every write, closes (retrying a busy close), checks the closed image.
  void finish(ReactorQueue& q) {
    for (int i = 0; i < 2'000'000; ++i) {
      bool busy = false;
      for (auto& s : slots_) {
        if (s->st == Slot::St::kInFlight) end(*s);
        busy |= s->st != Slot::St::kIdle;
      }
      if (!busy) break;
      bm_->step();
      io_->pull();
      io_->complete_one();
      q.poll();
      std::this_thread::yield();
    }
    if (!all_idle()) {
      violation("a pending write was never admitted nor refused");
      return;
    }
    const std::uint64_t passes = bm_->stats().daemon_passes;
    io_->set_data_flush_result({});  // the close's data flush works
    bm_->begin_close();
    std::error_code r;
    for (int i = 0; i < 2'000'000; ++i) {
      const auto st = bm_->close_state(r);
      io_->pull();  // a failed bitmap still hands out its stale mark
      if (st == ReactorBitmap::CloseState::kClosed && io_->outstanding().empty()) break;
      if (st == ReactorBitmap::CloseState::kOpen) bm_->begin_close();  // a busy close: again
      bm_->step();
      io_->pull();
      io_->complete_one();
      clock_.advance(1ms);
      std::this_thread::yield();
    }
    check_failed();
    totals_.passes += bm_->stats().daemon_passes - passes;
    if (bm_->close_state(r) != ReactorBitmap::CloseState::kClosed) return;
    if (failed_seen_ || mode_ != DiskMode::kHonest) return;
    if (r) violation("close of an idle bitmap gave '" + r.message() + "'");
    const auto st = test::image_states(disk_->durable_image());
    for (std::uint64_t c = 0; c < st.size(); ++c) {
      if (!st[c] || is_dirty_like(static_cast<ChunkState>(*st[c]))) {
        violation("after a clean close chunk " + std::to_string(c) + " is durably " +
                  (st[c] ? std::string(to_string(static_cast<ChunkState>(*st[c])))
                         : std::string("unverifiable")));
        break;
      }
    }
  }

  const std::uint64_t seed_;
  const RunSize& size_;
  Totals& totals_;
  const DiskMode mode_;
  std::mt19937_64 rng_;
  const Config* cfg_ = nullptr;
  FakeClock clock_;
  bool data_flush_ = false;
  bool pipelined_ = false;  // ReactorOptions::pipelined_rounds
  std::unique_ptr<MetaDisk> disk_;
  std::unique_ptr<ReactorBitmap> bm_;
  std::unique_ptr<MetaEngine> io_;
  ReactorQueue* q_ = nullptr;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::uint64_t chunk_ = 0, chunks_ = 0;
  std::map<std::uint64_t, int> inflight_;             // chunk -> admitted writes not ended
  std::map<std::uint64_t, std::uint64_t> unflushed_;  // chunk -> end number (data_flush)
  std::uint64_t end_seq_ = 0;
  std::map<std::uint64_t, std::uint64_t> flush_handed_;  // kDataFlush id -> end number
  std::unordered_map<std::size_t, std::optional<std::vector<std::uint8_t>>> cache_;
  bool failed_seen_ = false;
  int violations_ = 0;
  std::string where_;
};

void Slot::on_admit(ReactorWrite& w, std::error_code ec) {
  auto& s = static_cast<Slot&>(w);
  s.owner->admitted(s, ec);
}

TEST(ReactorCrash, EveryCrashImageKeepsEveryAdmittedWriteDirty) {
  const RunSize size = run_size();
  Totals totals;
  std::mt19937_64 seeds(size.base_seed);
  for (int i = 0; i < size.workloads; ++i) {
    const std::uint64_t seed = seeds();
    if (size.only && *size.only != seed) continue;
    Workload(seed, size, totals, DiskMode::kHonest).run();
    if (totals.violations > 20) break;
  }
  std::printf("%s\n", totals.summary().c_str());
  if (size.only) return;
  EXPECT_GT(totals.images, 0u);
  EXPECT_GT(totals.admissions, 0u);
  EXPECT_GT(totals.pending_admissions, 0u);
  EXPECT_GT(totals.data_flushes, 0u);
  EXPECT_GT(totals.failed_flushes, 0u);
  EXPECT_GT(totals.failed_bitmaps, 0u);
  EXPECT_GT(totals.discards, 0u);
}

TEST(ReactorCrash, SelfTestADiskThatSkipsSyncsIsCaught) {
  RunSize size = run_size();
  Totals totals;
  std::mt19937_64 seeds(size.base_seed ^ 0x5eed);
  for (int i = 0; i < 40 && totals.violations == 0; ++i)
    Workload(seeds(), size, totals, DiskMode::kSkipsSyncs).run();
  std::printf("self-test over a disk that skips syncs: %" PRIu64 " violations found\n",
              totals.violations);
  EXPECT_GT(totals.violations, 0u) << "the checker missed a disk that lies about syncs";
}

}  // namespace
}  // namespace llbitmap

int main(int argc, char** argv) {
  return llbitmap::test::crash_test_main(argc, argv);
}
