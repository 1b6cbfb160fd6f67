// SPDX-License-Identifier: LGPL-2.1-or-later
//
// llbitmap_torture: a long randomised run of the whole bitmap under real threads and
// real time (docs/testing.md#torture; in the style of rcutorture / locktorture). For as long as
// it runs it proves that:
//
//   S1  no sync ever makes Clean or Unwritten durable for a chunk that has a write
//       issued and not yet ended: checked inside the storage's sync hook, atomically
//       with the durability change it is about to make;
//   S2  when start_write returns, every chunk of the range is durably Dirty/NeedSync
//       (checked against the durable image the hook maintains, under the same lock);
//   S4  an image taken right after a sync reopens with exactly the NeedSync chunks it
//       must have (Dirty -> NeedSync, unverifiable block -> NeedSync, stale superblock
//       -> every written chunk NeedSync), and every write in flight at that moment is
//       NeedSync, and lies in needs_recovery(); needs_sync() / needs_recovery() /
//       needs_rebuild() list exactly the NeedSync+Syncing / +Dirty / not-Unwritten
//       chunks; the image is bound to the run's device uuid and refused
//       (Errc::foreign_bitmap) when opened for another device; at the end, after quiesce + flush,
//       nothing is Dirty in memory or on "disk", the counts add up, and the image reopens with no
//       NeedSync at all;
//   S5  (--faults) after an EIO on a sync the bitmap is failed, refuses writes, has
//       marked its superblock stale, reopens as a full resync of every written chunk,
//       and closes without hanging; then a fresh bitmap takes over;
//   S6  a PageBarrier suspend reports "drained" only when every holder has left, and a
//       raise never succeeds while its page is suspended (on the fake writers' pages);
//   liveness: no writer, fake writer, daemon or control thread goes 10 s without
//       progress (the watchdog then dumps the state, every thread's stack if gdb is
//       available, and exits with status 3).
//
// Engagement counters fail the run when zero, so a run that never hit the race windows
// cannot pass: raises that met a suspended page and suspends that had to wait for a
// holder (fake-writer pages; the bitmap's own pages too if BitmapStats carries them),
// pages cleaned by the bitmap, persist waits, stutters, flushes, reopen checks, and the
// faults / churn threads when asked for.
//
// The run prints the seed first and ends with one summary line containing SUCCESS or
// FAILURE (with "!!!"); the exit status is 0 only for SUCCESS. The seed fixes every
// random choice of the program (timings, ranges, fault points); the thread schedule
// is the machine's.
//
// Usage: llbitmap_torture [--duration S] [--seed N] [--writers W] [--fake-writers F]
//                         [--faults] [--churn] [--stall S] [--stat-interval S] [--no-gdb]
//   builds with LLBITMAP_SYNC_POINTS=ON also take:
//     --yield                     yield at random at the library's named sync points, to
//                                 widen race windows (liburcu's DEBUG_YIELD idea);
//     --inject-bug mark-before-raise  restore the order upstream fixed in ef4ca3d4bf09
//                                 (mark, then raise): the run must then FAIL (S1/S2),
//                                 which shows the oracles can see that bug.
#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/page_barrier.h>
#include <llbitmap/testing/fault_storage.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bitmap_fixture.h"
#include "percpu_area.h"
#include "sync_point.h"
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace llbitmap::torture {
namespace {

using namespace std::chrono_literals;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr std::uint8_t kUnwritten = 0, kClean = 1, kDirty = 2, kNeedSync = 3;
constexpr std::uint64_t kDeviceBytes = 1ull << 30;  // 16384 chunks of 64 KiB, 5 pages
constexpr int kFakePages = 4;
constexpr int kHotChunks = 8;

SteadyTime now() {
  return std::chrono::steady_clock::now();
}

double seconds_since(SteadyTime t) {
  return std::chrono::duration<double>(now() - t).count();
}

// ------------------------------------------------------------------ options

struct Options {
  double duration = 60;
  std::uint64_t seed = 0;
  bool seed_given = false;
  int writers = 3;
  int fake_writers = 2;
  bool faults = false;
  bool churn = false;
  double stall = 10;
  double stat_interval = 10;
  bool gdb = true;
  bool yield = false;                  // sync-point builds: yield at the library's named points
  bool bug_mark_before_raise = false;  // sync-point builds: the pre-ef4ca3d4bf09 order
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "llbitmap_torture: %s\nusage: llbitmap_torture [--duration S] [--seed N] "
               "[--writers W] [--fake-writers F] [--faults] [--churn] [--stall S] "
               "[--stat-interval S] [--no-gdb] [--yield] [--inject-bug mark-before-raise]\n",
               msg);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  auto value = [&](int& i) -> const char* {
    if (i + 1 >= argc) usage("missing value");
    return argv[++i];
  };
  auto number = [&](int& i) {
    const char* v = value(i);
    char* end = nullptr;
    const double d = std::strtod(v, &end);
    if (end == v || *end != '\0' || d < 0) usage("bad number");
    return d;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--duration")
      o.duration = number(i);
    else if (a == "--seed") {
      const char* v = value(i);
      char* end = nullptr;
      o.seed = std::strtoull(v, &end, 0);
      if (end == v || *end != '\0') usage("bad seed");
      o.seed_given = true;
    } else if (a == "--writers")
      o.writers = static_cast<int>(number(i));
    else if (a == "--fake-writers")
      o.fake_writers = static_cast<int>(number(i));
    else if (a == "--faults")
      o.faults = true;
    else if (a == "--churn")
      o.churn = true;
    else if (a == "--stall")
      o.stall = number(i);
    else if (a == "--stat-interval")
      o.stat_interval = number(i);
    else if (a == "--no-gdb")
      o.gdb = false;
    else if (a == "--yield")
      o.yield = true;
    else if (a == "--inject-bug") {
      if (std::string(value(i)) != "mark-before-raise") usage("--inject-bug: mark-before-raise");
      o.bug_mark_before_raise = true;
    } else if (a == "--help" || a == "-h")
      usage("help");
    else
      usage(("unknown argument " + a).c_str());
  }
  if (o.writers < 1) usage("--writers must be at least 1");
  if (o.fake_writers < 1) usage("--fake-writers must be at least 1");
#ifndef LLBM_SYNC_POINTS
  if (o.yield || o.bug_mark_before_raise)
    usage("--yield and --inject-bug need a build with LLBITMAP_SYNC_POINTS=ON");
#endif
  return o;
}

// ------------------------------------------------------------------ random numbers

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() noexcept {  // splitmix64
    std::uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi].
  std::uint64_t range(std::uint64_t lo, std::uint64_t hi) noexcept {
    return lo + next() % (hi - lo + 1);
  }
  bool chance(unsigned percent) noexcept { return next() % 100 < percent; }

 private:
  std::uint64_t s_;
};

// The delay between "issue" and end_write: mostly short, sometimes long enough to make
// a suspend wait or time out. A compiler barrier per iteration, no memory traffic.
void spin(std::uint64_t iterations) {
  for (std::uint64_t i = 0; i < iterations; ++i)
    std::atomic_signal_fence(std::memory_order_seq_cst);
}

std::uint64_t random_hold(Rng& rng) {
  const std::uint64_t r = rng.next() % 1000;
  if (r < 900) return rng.range(0, 2000);
  if (r < 990) return rng.range(0, 50000);
  return rng.range(0, 1000000);
}

// ------------------------------------------------------------------ violations

// Every oracle counter; any non-zero one fails the run.
struct Violations {
  std::atomic<std::uint64_t> s1{0};           // Clean/Unwritten made durable under a write
  std::atomic<std::uint64_t> s2{0};           // start_write returned before Dirty was durable
  std::atomic<std::uint64_t> s4{0};           // a reopened image differs from the expectation
  std::atomic<std::uint64_t> s5{0};           // failure handling broke a rule
  std::atomic<std::uint64_t> integrity{0};    // bad block / stale sb while healthy
  std::atomic<std::uint64_t> barrier{0};      // S6 on the fake pages
  std::atomic<std::uint64_t> errors{0};       // an error the configuration does not explain
  std::atomic<std::uint64_t> final_state{0};  // end-of-run checks
  std::atomic<std::uint64_t> memory{0};       // per-thread counter memory not returned
  std::atomic<std::uint64_t> reported{0};

  std::uint64_t total() const {
    return s1.load() + s2.load() + s4.load() + s5.load() + integrity.load() + barrier.load() +
           errors.load() + final_state.load() + memory.load();
  }
};

Violations g_violations;

// Counts a violation and prints the first few of them with their details.
__attribute__((format(printf, 2, 3))) void violation(std::atomic<std::uint64_t>& counter,
                                                     const char* fmt, ...) {
  counter.fetch_add(1, std::memory_order_relaxed);
  if (g_violations.reported.fetch_add(1, std::memory_order_relaxed) >= 30) return;
  std::va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "llbitmap_torture: VIOLATION: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
}

// ------------------------------------------------------------------ pause gate

// Writers enter the gate around every operation; stutter and the control thread pause
// it (nestable) and wait until no operation is in flight. seq_cst on both sides: the
// writer's "I am inside" and the pauser's "paused" form a store-buffering pair.
class Gate {
 public:
  // Returns when no pause is in force, with the caller counted as inside. `parked`
  // runs before each wait (the watchdog does not count a parked thread as stalled).
  template <class F>
  void enter(F parked) {
    for (;;) {
      const int p = pauses_.load(std::memory_order_seq_cst);
      if (p != 0) {
        parked();
        pauses_.wait(p, std::memory_order_seq_cst);
        continue;
      }
      inside_.fetch_add(1, std::memory_order_seq_cst);
      if (pauses_.load(std::memory_order_seq_cst) == 0) return;
      leave();
    }
  }
  void leave() {
    if (inside_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        pauses_.load(std::memory_order_seq_cst) != 0)
      inside_.notify_all();
  }
  void pause() {
    pauses_.fetch_add(1, std::memory_order_seq_cst);
    for (int n; (n = inside_.load(std::memory_order_seq_cst)) != 0;)
      inside_.wait(n, std::memory_order_seq_cst);
  }
  void resume() {
    pauses_.fetch_sub(1, std::memory_order_seq_cst);
    pauses_.notify_all();
  }
  bool paused() const { return pauses_.load(std::memory_order_relaxed) != 0; }

 private:
  std::atomic<int> pauses_{0};
  std::atomic<int> inside_{0};
};

// ------------------------------------------------------------------ actors

enum Phase : int {
  kIdle,    // not running (not started, or finished)
  kParked,  // waiting at the gate
  kPicking,
  kStartWrite,  // inside start_write
  kIssued,      // "data write in flight"
  kEndWrite,
  kRaise,
  kHold,
  kSuspend,
  kResume,
  kFlush,
  kSleep,
  kSwap,
  kCheck,
  kJoin,
  kPausing,
};

const char* phase_name(int p) {
  static const char* const names[] = {
      "idle",    "parked", "picking", "start_write", "issued", "end_write", "raise", "hold",
      "suspend", "resume", "flush",   "sleep",       "swap",   "check",     "join",  "pausing"};
  return p >= 0 && p <= kPausing ? names[p] : "?";
}

// What the watchdog sees of one thread.
struct Actor {
  explicit Actor(std::string n) : name(std::move(n)) {}
  std::string name;
  std::atomic<std::uint64_t> ops{0};
  std::atomic<int> phase{kIdle};
  std::atomic<std::uint64_t> a{0}, b{0};  // current chunk range or barrier, for the dump
  void set(Phase p) { phase.store(p, std::memory_order_relaxed); }
};

// ------------------------------------------------------------------ the oracle

// What open() must make of a stored byte (docs/design.md#s4), written independently of the
// library's transition table.
std::uint8_t expected_after_open(std::uint8_t stored, bool block_ok, bool stale) {
  if (!block_ok || stored > 4) return kNeedSync;
  if (stale) return stored == kUnwritten ? kUnwritten : kNeedSync;  // Stale
  if (stored == kDirty || stored == 4) return kNeedSync;            // Reload
  return stored;
}

struct ChunkRangeIncl {
  std::uint64_t first = 0, last = 0;  // inclusive
};

// A durable image taken right after a successful sync, with the chunks whose writes
// were in flight at that moment.
struct Snapshot {
  std::vector<std::byte> file;
  std::vector<std::uint64_t> in_flight;
};

// One bitmap generation's model of the durable image and of the writes in flight.
// Lock order: the storage's mutex (held around the hook) before mu_; mu_ is never held
// across a storage call.
class Oracle {
 public:
  explicit Oracle(const Geometry& g)
      : geo_(g),
        attempted_(new std::atomic<std::uint8_t>[g.chunks()]),
        byte_(g.chunks(), 0),
        block_ok_(g.blocks(), false),
        issued_(g.chunks(), 0),
        started_(g.chunks(), 0) {
    for (std::uint64_t c = 0; c < g.chunks(); ++c)
      attempted_[c].store(0, std::memory_order_relaxed);
  }

  // The sync hook: runs under the storage's mutex, before the durable image changes.
  std::error_code on_sync(const SyncEvent& ev) {
    std::lock_guard lk(mu_);
    ++syncs_seen_;
    if (ev.result) {
      failed_sync_ = true;  // the pending writes are dropped: the durable image stays
      return {};
    }
    if (ev.pending.empty()) return {};
    apply(ev.pending);
    check_after_sync(ev.seq);
    if (want_snapshot_) {
      want_snapshot_ = false;
      Snapshot s;
      s.file = file_;
      for (const auto& [id, r] : active_)
        for (std::uint64_t c = r.first; c <= r.last; ++c) s.in_flight.push_back(c);
      std::sort(s.in_flight.begin(), s.in_flight.end());
      s.in_flight.erase(std::unique(s.in_flight.begin(), s.in_flight.end()), s.in_flight.end());
      snapshot_ = std::move(s);
    }
    return {};
  }

  // Before start_write: the chunks may be marked from now on.
  void note_attempt(ChunkRangeIncl r) {
    for (std::uint64_t c = r.first; c <= r.last; ++c)
      attempted_[c].store(1, std::memory_order_relaxed);
  }

  // After start_write returned success, before the data write is "issued": S2, then the
  // write counts as in flight for every later sync (S1).
  void issue(std::uint64_t id, ChunkRangeIncl r) {
    std::lock_guard lk(mu_);
    for (std::uint64_t c = r.first; c <= r.last; ++c) {
      if (!safe(c))
        violation(g_violations.s2,
                  "S2: start_write returned for chunk %" PRIu64 " (range %" PRIu64 "..%" PRIu64
                  ") but its durable state is %u%s%s",
                  c, r.first, r.last, byte_[c],
                  block_ok_[geo_.block_of_chunk(c)] ? "" : " (bad block)",
                  sb_stale() ? " (stale sb)" : "");
      ++issued_[c];
      started_[c] = 1;
    }
    active_.emplace(id, r);
  }

  // Before end_write: the data write is complete.
  void retire(std::uint64_t id, ChunkRangeIncl r) {
    std::lock_guard lk(mu_);
    for (std::uint64_t c = r.first; c <= r.last; ++c) --issued_[c];
    active_.erase(id);
  }

  void request_snapshot() {
    std::lock_guard lk(mu_);
    want_snapshot_ = true;
  }
  std::optional<Snapshot> take_snapshot() {
    std::lock_guard lk(mu_);
    return std::exchange(snapshot_, std::nullopt);
  }

  // For the checks at quiescent points (no writer inside the gate).
  std::vector<std::byte> file() {
    std::lock_guard lk(mu_);
    return file_;
  }
  bool failed_sync() {
    std::lock_guard lk(mu_);
    return failed_sync_;
  }
  std::uint64_t syncs_seen() {
    std::lock_guard lk(mu_);
    return syncs_seen_;
  }
  std::vector<std::uint8_t> started() {
    std::lock_guard lk(mu_);
    return started_;
  }
  std::vector<std::uint8_t> attempted() {
    std::vector<std::uint8_t> out(geo_.chunks());
    for (std::uint64_t c = 0; c < geo_.chunks(); ++c)
      out[c] = attempted_[c].load(std::memory_order_relaxed);
    return out;
  }
  std::size_t in_flight() {
    std::lock_guard lk(mu_);
    return active_.size();
  }

 private:
  bool sb_stale() const { return !sb_ok_ || (sb_state_ & (kSbStale | kSbWriteError)) != 0; }

  // A chunk is safe when a crash now resyncs it (S4): it reopens as NeedSync (durably
  // Dirty/NeedSync/Syncing or an invalid byte, or in a block that fails its checksum, or
  // written (not Unwritten) under a stale superblock), or the superblock is unreadable
  // (open refuses the file: a full resync). A stale superblock does not cover a chunk
  // that is durably Unwritten: Stale leaves Unwritten alone.
  bool safe(std::uint64_t c) const {
    if (!sb_ok_) return true;
    const bool stale = (sb_state_ & (kSbStale | kSbWriteError)) != 0;
    return expected_after_open(byte_[c], block_ok_[geo_.block_of_chunk(c)], stale) == kNeedSync;
  }

  void apply(std::span<const PendingWrite> pending) {
    const std::uint64_t bs = geo_.block_bytes();
    const std::uint64_t toff = geo_.checksum_table_offset();
    const std::uint64_t tend = toff + geo_.checksum_table_bytes();
    std::vector<bool> touched(geo_.blocks(), !geometry_seen_);
    bool sb_touched = !geometry_seen_;
    for (const PendingWrite& w : pending) {
      const std::uint64_t end = w.offset + w.data.size();
      if (file_.size() < end) file_.resize(end);
      // Image blocks written.
      for (std::uint64_t b = w.offset / bs; b < geo_.blocks() && b * bs < end; ++b) {
        touched[b] = true;
        if (b == 0) sb_touched = true;
      }
      // Checksum entries written with a different value.
      const std::uint64_t lo = std::max(w.offset, toff), hi = std::min(end, tend);
      for (std::uint64_t e = (lo >= hi ? geo_.blocks() : (lo - toff) / 4);
           e < geo_.blocks() && toff + e * 4 < hi; ++e) {
        const std::uint64_t eo = toff + e * 4;
        for (std::uint64_t i = std::max(eo, lo); i < std::min(eo + 4, hi); ++i)
          if (file_[i] != w.data[i - w.offset]) touched[e] = true;
      }
      std::memcpy(file_.data() + w.offset, w.data.data(), w.data.size());
    }
    if (file_.size() < geo_.file_bytes()) return;  // not a whole file yet
    geometry_seen_ = true;
    if (sb_touched) {
      std::error_code ec;
      auto sb = Superblock::decode(file_, ec, file_.size());
      sb_ok_ = sb.has_value() && sb->geometry == geo_;
      if (sb_ok_) {
        sb_state_ = sb->state;
        uuid_ = sb->uuid;
      }
    }
    const std::span<const std::byte> image(file_.data(), geo_.image_bytes());
    const std::span<const std::byte> table(file_.data() + toff, geo_.checksum_table_bytes());
    for (std::uint64_t b = 0; b < geo_.blocks(); ++b) {
      if (!touched[b]) continue;
      block_ok_[b] = sb_ok_ && verify_block(geo_, uuid_, image, table, b);
      const ChunkRange r = geo_.chunks_in_block(b);
      for (std::uint64_t c = r.first; c < r.end; ++c)
        byte_[c] = std::to_integer<std::uint8_t>(file_[geo_.chunk_pos(c)]);
    }
  }

  void check_after_sync(std::uint64_t seq) {
    if (!geometry_seen_) return;
    // S1: every write in flight is safe in the image this sync makes durable.
    for (const auto& [id, r] : active_) {
      for (std::uint64_t c = r.first; c <= r.last; ++c) {
        if (!safe(c))
          violation(g_violations.s1,
                    "S1: sync #%" PRIu64 " makes chunk %" PRIu64 " durably %u while write %" PRIu64
                    " (chunks %" PRIu64 "..%" PRIu64 ") is in flight",
                    seq, c, byte_[c], id, r.first, r.last);
      }
    }
    if (!failed_sync_) {
      // Healthy: every block verifies and the superblock is neither stale nor failed.
      bool blocks_ok = true;
      for (std::uint64_t b = 0; b < geo_.blocks(); ++b) blocks_ok = blocks_ok && block_ok_[b];
      if (!blocks_ok || sb_stale())
        violation(
            g_violations.integrity, "sync #%" PRIu64 " leaves %s in a healthy bitmap", seq,
            sb_stale() ? "a stale or unreadable superblock" : "a block that fails its checksum");
    } else if (!sb_stale()) {
      // S5: after a failed sync, nothing is made durable without the stale mark.
      violation(g_violations.s5,
                "S5: sync #%" PRIu64 " after a failed sync leaves the superblock not stale", seq);
    }
  }

  const Geometry geo_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> attempted_;  // relaxed; read when quiescent
  std::mutex mu_;
  std::vector<std::byte> file_;  // the durable file, as the syncs so far made it
  bool geometry_seen_ = false;
  bool sb_ok_ = false;
  std::uint32_t sb_state_ = 0;
  Uuid uuid_{};
  std::vector<std::uint8_t> byte_;  // per chunk: its durable state byte
  std::vector<bool> block_ok_;      // per block: it verifies
  std::vector<std::uint32_t> issued_;
  std::map<std::uint64_t, ChunkRangeIncl> active_;
  std::vector<std::uint8_t> started_;
  bool failed_sync_ = false;
  std::uint64_t syncs_seen_ = 0;
  bool want_snapshot_ = false;
  std::optional<Snapshot> snapshot_;
};

// ------------------------------------------------------------------ reopen checks

// The device every generation's bitmap is bound to.
constexpr DeviceUuid kDevice = {0x74, 0x6f, 0x72, 0x74, 0x75, 0x72, 0x65, 0x2d,
                                0x64, 0x65, 0x76, 0x69, 0x63, 0x65, 0x00, 0x01};

// The chunks a view lists.
std::vector<bool> view_chunks(const Geometry& g,
                              const std::vector<std::pair<std::uint64_t, std::uint64_t>>& runs) {
  std::vector<bool> in(g.chunks(), false);
  for (const auto& [off, len] : runs)
    for (std::uint64_t c = off / g.chunk_bytes(); c < g.chunks() && c * g.chunk_bytes() < off + len;
         ++c)
      in[c] = true;
  return in;
}

struct DecodedFile {
  std::optional<Superblock> sb;
  std::vector<std::uint8_t> bytes;
  std::vector<bool> block_ok;
};

DecodedFile decode_file(const std::vector<std::byte>& file) {
  DecodedFile d;
  std::error_code ec;
  d.sb = Superblock::decode(file, ec, file.size());
  if (!d.sb) return d;
  const Geometry& g = d.sb->geometry;
  const std::span<const std::byte> image(file.data(), g.image_bytes());
  const std::span<const std::byte> table(file.data() + g.checksum_table_offset(),
                                         g.checksum_table_bytes());
  d.block_ok.resize(g.blocks());
  for (std::uint64_t b = 0; b < g.blocks(); ++b)
    d.block_ok[b] = verify_block(g, d.sb->uuid, image, table, b);
  d.bytes.resize(g.chunks());
  for (std::uint64_t c = 0; c < g.chunks(); ++c)
    d.bytes[c] = std::to_integer<std::uint8_t>(file[g.chunk_pos(c)]);
  return d;
}

// Reopens a copy of `file` and compares every chunk with expected_after_open();
// `must_resync` chunks must come back NeedSync. Returns the reopened states (empty if
// the open failed).
std::vector<std::uint8_t> check_reopen(const std::vector<std::byte>& file,
                                       const std::vector<std::uint64_t>& must_resync,
                                       const char* what, bool healthy) {
  const DecodedFile d = decode_file(file);
  std::error_code ec;
  std::unique_ptr<Bitmap> re = test::reopen(file, ec, nullptr, kDevice);
  if (!d.sb) {
    if (healthy) violation(g_violations.s4, "%s: the durable superblock does not decode", what);
    if (re) violation(g_violations.s4, "%s: open accepted an undecodable superblock", what);
    return {};
  }
  if (!re) {
    violation(g_violations.s4, "%s: reopen failed: %s", what, ec.message().c_str());
    return {};
  }
  const Geometry& g = d.sb->geometry;
  const bool stale = (d.sb->state & (kSbStale | kSbWriteError)) != 0;
  std::vector<std::uint8_t> got(g.chunks());
  std::uint64_t mismatches = 0;
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    got[c] = to_byte(re->state(c));
    const std::uint8_t want =
        expected_after_open(d.bytes[c], d.block_ok[g.block_of_chunk(c)], stale);
    if (got[c] != want && mismatches++ < 3)
      violation(g_violations.s4,
                "%s: chunk %" PRIu64 " stored %u (block %s, sb %s) reopens as %u, expected %u",
                what, c, d.bytes[c], d.block_ok[g.block_of_chunk(c)] ? "ok" : "bad",
                stale ? "stale" : "fresh", got[c], want);
  }
  for (std::uint64_t c : must_resync) {
    if (got[c] != kNeedSync)
      violation(g_violations.s4, "%s: chunk %" PRIu64 " had a write in flight but reopens as %u",
                what, c, got[c]);
  }
  // The three views: exactly their states, and every write in flight needs recovery.
  const std::vector<bool> sync = view_chunks(g, re->needs_sync());
  const std::vector<bool> recovery = view_chunks(g, re->needs_recovery());
  const std::vector<bool> rebuild = view_chunks(g, re->needs_rebuild());
  std::uint64_t view_errors = 0;
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    const bool ok = sync[c] == (got[c] == kNeedSync || got[c] == 4) &&
                    recovery[c] == (got[c] == kNeedSync || got[c] == 4 || got[c] == kDirty) &&
                    rebuild[c] == (got[c] != kUnwritten);
    if (!ok && view_errors++ < 3)
      violation(g_violations.s4,
                "%s: chunk %" PRIu64
                " reopens as %u but the views say sync %d recovery %d "
                "rebuild %d",
                what, c, got[c], int(sync[c]), int(recovery[c]), int(rebuild[c]));
  }
  for (std::uint64_t c : must_resync)
    if (!recovery[c])
      violation(g_violations.s4,
                "%s: chunk %" PRIu64
                " had a write in flight, needs_recovery() "
                "leaves it",
                what, c);
  re.reset();
  // Another device's copy of this image is refused and left as it is.
  DeviceUuid other = kDevice;
  other[15] ^= 0xff;
  if (std::string why; !test::refused_as_foreign(file, other, why))
    violation(g_violations.s4, "%s: bound to the run's device, yet %s", what, why.c_str());
  return got;
}

// ------------------------------------------------------------------ the torture

template <class S>
std::optional<std::uint64_t> page_raise_waits(const S& s) {
  if constexpr (requires { s.raise_waits; })
    return s.raise_waits;
  else
    return std::nullopt;
}
template <class S>
std::optional<std::uint64_t> page_suspend_waits(const S& s) {
  if constexpr (requires { s.suspend_waits; })
    return s.suspend_waits;
  else
    return std::nullopt;
}

struct Generation {
  int id = 0;
  std::unique_ptr<Oracle> oracle;   // declared first: destroyed after the bitmap
  FaultStorage* storage = nullptr;  // owned by bitmap
  std::unique_ptr<Bitmap> bitmap;
};

class Torture {
 public:
  explicit Torture(const Options& o) : opt_(o), rng_(o.seed) {
    std::error_code ec;
    GeometryOptions go;
    go.device_bytes = kDeviceBytes;
    geo_ = *Geometry::compute(go, ec);
    daemon_sleep_ = std::chrono::milliseconds(rng_.range(1, 3));
    barrier_idle_ = std::chrono::milliseconds(rng_.range(1, 3));
    // The hot set: four chunks of one block, and one chunk on each other page.
    for (int i = 0; i < 4; ++i) hot_[i] = 10 + static_cast<std::uint64_t>(i);
    for (int i = 4; i < kHotChunks; ++i)
      hot_[i] = std::min(geo_.first_chunk_of_page(static_cast<std::uint64_t>(i - 3)) + 5,
                         geo_.chunks() - 1);
    for (int i = 0; i < kFakePages; ++i)
      fake_pages_.push_back(std::make_unique<PageBarrier>(Clock::system(), barrier_idle_));
    for (auto& f : fake_inside_) f.store(0);
    for (auto& f : fake_suspended_) f.store(false);
  }

  int run();

 private:
  Actor& add_actor(std::string name) {
    actors_.push_back(std::make_unique<Actor>(std::move(name)));
    return *actors_.back();
  }
  std::unique_ptr<Generation> make_generation();
  void retire_generation(std::unique_ptr<Generation> g);
  void handle_failure();
  void final_checks();

  ChunkRangeIncl pick_range(Rng& rng) const;
  bool bitmap_op(Actor& me, Rng& rng);
  void fake_op(Actor& me, Rng& rng);
  void writer_main(Actor& me, std::uint64_t seed);
  void fake_writer_main(Actor& me, std::uint64_t seed);
  void fake_daemon_main(Actor& me, std::uint64_t seed);
  void stutter_main(Actor& me, std::uint64_t seed);
  void churn_main(Actor& me, std::uint64_t seed);
  void watchdog_main();
  [[noreturn]] void stalled(const std::string& who, double secs);
  void print_stats(const char* tag);
  std::string summary(bool ok, const std::string& failed);

  const Options opt_;
  Rng rng_;  // the control thread's
  Geometry geo_;
  std::chrono::milliseconds daemon_sleep_{1}, barrier_idle_{1};
  std::uint64_t hot_[kHotChunks]{};
  SteadyTime start_{};

  Gate gate_;
  std::atomic<bool> stop_{false};
  std::vector<std::unique_ptr<Actor>> actors_;
  std::vector<std::thread> threads_;

  // The current bitmap generation: swapped by the control thread while the gate is
  // paused; the watchdog reads it under gen_mu_.
  std::mutex gen_mu_;
  std::unique_ptr<Generation> gen_;
  std::atomic<Generation*> cur_{nullptr};
  int generations_ = 0;
  BitmapStats totals_{};  // of retired generations

  // Fake writers' pages and their S6 oracle.
  std::vector<std::unique_ptr<PageBarrier>> fake_pages_;
  std::atomic<int> fake_inside_[kFakePages];
  std::atomic<bool> fake_suspended_[kFakePages];
  std::atomic<std::uint64_t> fake_suspend_passes_{0};

  // The bitmap's own pages, when BitmapStats carries their barrier counters.
  const bool bm_page_stats_ = page_raise_waits(BitmapStats{}).has_value();
  std::uint64_t bm_raise_waits_ = 0, bm_suspend_waits_ = 0;

  // Counters.
  std::atomic<std::uint64_t> next_write_id_{1};
  std::atomic<std::uint64_t> writes_ok_{0}, err_eio_{0}, err_failed_{0}, err_other_{0};
  std::atomic<std::uint64_t> churn_threads_{0};
  std::atomic<std::uint64_t> stutters_{0};
  std::uint64_t flushes_ = 0, flush_errors_ = 0, snapshots_checked_ = 0;
  std::uint64_t faults_armed_ = 0, faults_handled_ = 0;
  bool fault_armed_ = false;
  SteadyTime fault_armed_at_{};

  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;
};

std::unique_ptr<Generation> Torture::make_generation() {
  auto g = std::make_unique<Generation>();
  g->id = ++generations_;
  g->oracle = std::make_unique<Oracle>(geo_);
  auto storage = std::make_unique<FaultStorage>();
  g->storage = storage.get();
  storage->set_sync_hook([o = g->oracle.get()](const SyncEvent& ev) { return o->on_sync(ev); });
  BitmapOptions bo;
  bo.device_bytes = kDeviceBytes;
  bo.daemon_sleep = daemon_sleep_;
  bo.barrier_idle = barrier_idle_;
  bo.start_daemon = true;
  bo.device_uuid = kDevice;
  std::error_code ec;
  g->bitmap = Bitmap::create(std::move(storage), bo, ec);
  if (!g->bitmap) {
    std::fprintf(stderr, "llbitmap_torture: cannot create a bitmap: %s\n", ec.message().c_str());
    std::exit(2);
  }
  if (g->bitmap->geometry() != geo_) {
    std::fprintf(stderr, "llbitmap_torture: unexpected geometry\n");
    std::exit(2);
  }
  return g;
}

void Torture::retire_generation(std::unique_ptr<Generation> g) {
  const BitmapStats s = g->bitmap->stats();
  totals_.persist_rounds += s.persist_rounds;
  totals_.blocks_written += s.blocks_written;
  totals_.persist_waits += s.persist_waits;
  totals_.daemon_passes += s.daemon_passes;
  totals_.pages_cleaned += s.pages_cleaned;
  totals_.suspend_timeouts += s.suspend_timeouts;
  bm_raise_waits_ += page_raise_waits(s).value_or(0);
  bm_suspend_waits_ += page_suspend_waits(s).value_or(0);
  g->bitmap.reset();
  g.reset();
}

ChunkRangeIncl Torture::pick_range(Rng& rng) const {
  const std::uint64_t n = geo_.chunks();
  const std::uint64_t r = rng.next() % 100;
  if (r < 45) {  // one chunk anywhere
    const std::uint64_t c = rng.range(0, n - 1);
    return {c, c};
  }
  if (r < 80) {  // the hot set
    const std::uint64_t c = hot_[rng.next() % kHotChunks];
    return {c, c};
  }
  if (r < 95) {  // across one page boundary (2 pages)
    const std::uint64_t p = rng.range(1, geo_.pages() - 1);
    const std::uint64_t b = geo_.first_chunk_of_page(p);
    return {b - rng.range(1, 64), std::min(b + rng.range(0, 63), n - 1)};
  }
  // across two page boundaries (3 pages)
  const std::uint64_t p = rng.range(1, geo_.pages() - 2);
  const std::uint64_t b1 = geo_.first_chunk_of_page(p), b2 = geo_.first_chunk_of_page(p + 1);
  return {b1 - rng.range(1, 64), std::min(b2 + rng.range(0, 63), n - 1)};
}

// One write: start_write -> issue -> hold -> retire -> end_write. Returns false on an
// error (nothing held then).
bool Torture::bitmap_op(Actor& me, Rng& rng) {
  Generation* g = cur_.load(std::memory_order_acquire);
  me.set(kPicking);
  const ChunkRangeIncl r = pick_range(rng);
  const std::uint64_t cb = geo_.chunk_bytes();
  const std::uint64_t off = r.first * cb + rng.range(0, cb / 2);
  const std::uint64_t end = r.last * cb + cb / 2 + rng.range(1, cb / 2);
  me.a.store(r.first, std::memory_order_relaxed);
  me.b.store(r.last, std::memory_order_relaxed);
  g->oracle->note_attempt(r);
  me.set(kStartWrite);
  const std::error_code ec = g->bitmap->start_write(off, end - off);
  if (ec) {
    if (ec == std::errc::io_error)
      err_eio_.fetch_add(1, std::memory_order_relaxed);
    else if (ec == Errc::bitmap_failed)
      err_failed_.fetch_add(1, std::memory_order_relaxed);
    else
      err_other_.fetch_add(1, std::memory_order_relaxed);
    if (!opt_.faults || !(ec == std::errc::io_error || ec == Errc::bitmap_failed))
      violation(g_violations.errors, "start_write(%" PRIu64 ", %" PRIu64 ") failed: %s", off,
                end - off, ec.message().c_str());
    else if (ec == Errc::bitmap_failed || ec == std::errc::io_error)
      std::this_thread::yield();  // the control thread replaces the bitmap soon
    return false;
  }
  const std::uint64_t id = next_write_id_.fetch_add(1, std::memory_order_relaxed);
  me.set(kIssued);
  g->oracle->issue(id, r);
  spin(random_hold(rng));
  g->oracle->retire(id, r);
  me.set(kEndWrite);
  g->bitmap->end_write(off, end - off);
  writes_ok_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Raise one page or two (ascending), check S6, hold, release.
void Torture::fake_op(Actor& me, Rng& rng) {
  int idx[2];
  int n = 1;
  idx[0] = static_cast<int>(rng.next() % kFakePages);
  if (rng.chance(25)) {
    idx[1] = static_cast<int>(rng.next() % kFakePages);
    if (idx[1] != idx[0]) {
      n = 2;
      if (idx[1] < idx[0]) std::swap(idx[0], idx[1]);
    }
  }
  me.a.store(static_cast<std::uint64_t>(idx[0]), std::memory_order_relaxed);
  me.b.store(static_cast<std::uint64_t>(idx[n - 1]), std::memory_order_relaxed);
  me.set(kRaise);
  for (int i = 0; i < n; ++i) {
    fake_pages_[idx[i]]->raise();
    fake_inside_[idx[i]].fetch_add(1, std::memory_order_seq_cst);
    if (fake_suspended_[idx[i]].load(std::memory_order_seq_cst))
      violation(g_violations.barrier, "S6: raise() of fake page %d returned while it is suspended",
                idx[i]);
  }
  me.set(kHold);
  spin(random_hold(rng));
  for (int i = n - 1; i >= 0; --i) {
    fake_inside_[idx[i]].fetch_sub(1, std::memory_order_seq_cst);
    fake_pages_[idx[i]]->release();
  }
}

void Torture::writer_main(Actor& me, std::uint64_t seed) {
  Rng rng(seed);
  while (!stop_.load(std::memory_order_relaxed)) {
    gate_.enter([&] { me.set(kParked); });
    bitmap_op(me, rng);
    gate_.leave();
    me.ops.fetch_add(1, std::memory_order_relaxed);
  }
  me.set(kIdle);
}

void Torture::fake_writer_main(Actor& me, std::uint64_t seed) {
  Rng rng(seed);
  while (!stop_.load(std::memory_order_relaxed)) {
    gate_.enter([&] { me.set(kParked); });
    fake_op(me, rng);
    gate_.leave();
    me.ops.fetch_add(1, std::memory_order_relaxed);
  }
  me.set(kIdle);
}

// The fake writers' daemon: every daemon_sleep, suspend the expired pages (or, every
// other pass, all of them, like a flush), check that they drained, "clean", resume.
void Torture::fake_daemon_main(Actor& me, std::uint64_t seed) {
  Rng rng(seed);
  while (!stop_.load(std::memory_order_relaxed)) {
    me.set(kSleep);
    std::this_thread::sleep_for(daemon_sleep_);  // the daemon's period
    const bool force = rng.chance(50);
    const Clock::time_point t = Clock::system().now();
    std::vector<PageBarrier*> cand;
    std::vector<int> idx;
    for (int i = 0; i < kFakePages; ++i) {
      if (force || fake_pages_[i]->expired(t)) {
        cand.push_back(fake_pages_[i].get());
        idx.push_back(i);
      }
    }
    if (!cand.empty()) {
      me.set(kSuspend);
      std::unique_ptr<bool[]> ok(new bool[cand.size()]);
      PageBarrier::suspend_many(cand, daemon_sleep_, std::span<bool>(ok.get(), cand.size()));
      for (std::size_t i = 0; i < cand.size(); ++i) {
        if (!ok[i]) continue;
        const int inside = fake_inside_[idx[i]].load(std::memory_order_seq_cst);
        if (inside != 0)
          violation(g_violations.barrier,
                    "S6: suspend() of fake page %d reported drained with %d holders inside", idx[i],
                    inside);
        fake_suspended_[idx[i]].store(true, std::memory_order_seq_cst);
      }
      spin(rng.range(0, 20000));  // "clean" while suspended
      me.set(kResume);
      for (std::size_t i = 0; i < cand.size(); ++i) {
        if (!ok[i]) continue;
        fake_suspended_[idx[i]].store(false, std::memory_order_seq_cst);
        cand[i]->resume();
      }
      fake_suspend_passes_.fetch_add(1, std::memory_order_relaxed);
    }
    me.ops.fetch_add(1, std::memory_order_relaxed);
  }
  me.set(kIdle);
}

// Load shaping: every ~100 ms, hold every writer off for a few ms so pages go idle and
// the daemons clean them; then let the writers collide with the suspends.
void Torture::stutter_main(Actor& me, std::uint64_t seed) {
  Rng rng(seed);
  while (!stop_.load(std::memory_order_relaxed)) {
    me.set(kSleep);
    std::this_thread::sleep_for(std::chrono::milliseconds(rng.range(70, 130)));
    if (stop_.load(std::memory_order_relaxed)) break;
    me.set(kPausing);
    gate_.pause();
    me.set(kSleep);
    std::this_thread::sleep_for(std::chrono::milliseconds(rng.range(2, 8)));
    gate_.resume();
    stutters_.fetch_add(1, std::memory_order_relaxed);
    me.ops.fetch_add(1, std::memory_order_relaxed);
  }
  me.set(kIdle);
}

// Short-lived threads: each does a few writes and fake raises and exits; at most two
// at a time.
void Torture::churn_main(Actor& me, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::thread> live;
  std::vector<std::unique_ptr<Actor>> scratch;  // per-thread phase holders (not watched)
  while (!stop_.load(std::memory_order_relaxed)) {
    me.set(kSleep);
    const std::uint64_t s = rng.next();
    auto act = std::make_unique<Actor>("churn");
    Actor* a = act.get();
    scratch.push_back(std::move(act));
    live.emplace_back([this, a, s] {
      Rng r(s);
      const int ops = static_cast<int>(r.range(2, 6));
      for (int i = 0; i < ops && !stop_.load(std::memory_order_relaxed); ++i) {
        gate_.enter([&] { a->set(kParked); });
        if (r.chance(70))
          bitmap_op(*a, r);
        else
          fake_op(*a, r);
        gate_.leave();
      }
    });
    churn_threads_.fetch_add(1, std::memory_order_relaxed);
    if (live.size() >= 2) {
      me.set(kJoin);
      live.front().join();
      live.erase(live.begin());
      scratch.erase(scratch.begin());
    }
    me.ops.fetch_add(1, std::memory_order_relaxed);
  }
  me.set(kJoin);
  for (auto& t : live) t.join();
  me.set(kIdle);
}

// ------------------------------------------------------------------ watchdog

void dump_stacks() {
  // posix_spawn, not fork: the library's fork handlers take locks a stalled thread may
  // hold. The debugger attaches to us; allow it where Yama restricts ptrace.
  ::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
  const std::string pid = std::to_string(::getpid());
  const char* argv[] = {
      "timeout", "120", "gdb", "-batch", "-nx", "-p", pid.c_str(), "-ex", "thread apply all bt",
      nullptr};
  pid_t child = 0;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
  if (posix_spawnp(&child, "timeout", &fa, nullptr, const_cast<char* const*>(argv), environ) != 0) {
    std::fprintf(stderr, "llbitmap_torture: cannot run gdb for the stacks\n");
    posix_spawn_file_actions_destroy(&fa);
    return;
  }
  posix_spawn_file_actions_destroy(&fa);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
}

void Torture::stalled(const std::string& who, double secs) {
  std::fprintf(stderr,
               "\nllbitmap_torture: STALL: %s made no progress for %.1f s (seed %" PRIu64 ")\n",
               who.c_str(), secs, opt_.seed);
  for (const auto& a : actors_)
    std::fprintf(stderr, "  %-14s phase=%-11s ops=%-10" PRIu64 " a=%" PRIu64 " b=%" PRIu64 "\n",
                 a->name.c_str(), phase_name(a->phase.load()), a->ops.load(), a->a.load(),
                 a->b.load());
  std::fprintf(stderr, "  gate paused=%d\n", gate_.paused() ? 1 : 0);
  for (int i = 0; i < kFakePages; ++i) {
    const PageBarrier::Stats s = fake_pages_[i]->stats();
    std::fprintf(stderr,
                 "  fake page %d: suspended=%d inside=%d raise_waits=%" PRIu64 " suspends=%" PRIu64
                 " suspend_waits=%" PRIu64 " timeouts=%" PRIu64 "\n",
                 i, fake_pages_[i]->is_suspended() ? 1 : 0, fake_inside_[i].load(), s.raise_waits,
                 s.suspends, s.suspend_waits, s.suspend_timeouts);
  }
  std::unique_lock lk(gen_mu_, std::try_to_lock);
  if (lk.owns_lock() && gen_) {
    const BitmapStats s = gen_->bitmap->stats();
    const StateCounts n = gen_->bitmap->counts();
    std::fprintf(stderr,
                 "  bitmap gen %d: failed=%d dirty=%" PRIu64 " clean=%" PRIu64 " need_sync=%" PRIu64
                 " persist_rounds=%" PRIu64 " persist_waits=%" PRIu64 " daemon_passes=%" PRIu64
                 " pages_cleaned=%" PRIu64 " suspend_timeouts=%" PRIu64 "\n",
                 gen_->id, gen_->bitmap->failed() ? 1 : 0, n.dirty, n.clean, n.need_sync,
                 s.persist_rounds, s.persist_waits, s.daemon_passes, s.pages_cleaned,
                 s.suspend_timeouts);
  } else {
    std::fprintf(stderr, "  bitmap: generation lock busy (control thread inside a swap)\n");
  }
  std::fflush(stderr);
  if (opt_.gdb) dump_stacks();
  std::fprintf(stderr, "llbitmap_torture: FAILURE !!! stalled (seed %" PRIu64 ")\n", opt_.seed);
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(3);
}

void Torture::watchdog_main() {
  const auto limit = std::chrono::duration<double>(opt_.stall);
  std::vector<std::uint64_t> last_ops(actors_.size());
  std::vector<SteadyTime> last_change(actors_.size(), now());
  int seen_gen = -1;
  std::uint64_t last_daemon = 0;
  SteadyTime daemon_change = now();
  std::unique_lock wl(watchdog_mu_);
  while (!watchdog_cv_.wait_for(wl, 100ms, [this] { return watchdog_stop_; })) {
    const SteadyTime t = now();
    for (std::size_t i = 0; i < actors_.size(); ++i) {
      Actor& a = *actors_[i];
      const std::uint64_t ops = a.ops.load(std::memory_order_relaxed);
      const int ph = a.phase.load(std::memory_order_relaxed);
      if (ops != last_ops[i] || ph == kIdle || ph == kParked) {
        last_ops[i] = ops;
        last_change[i] = t;
      } else if (t - last_change[i] > limit) {
        stalled(a.name, std::chrono::duration<double>(t - last_change[i]).count());
      }
    }
    // The daemon: with Dirty chunks in a healthy bitmap, passes (or timeouts) must go on.
    std::unique_lock lk(gen_mu_, std::try_to_lock);
    if (!lk.owns_lock() || !gen_) {
      daemon_change = t;
      continue;
    }
    const BitmapStats s = gen_->bitmap->stats();
    const std::uint64_t progress = s.daemon_passes + s.suspend_timeouts;
    if (gen_->id != seen_gen || progress != last_daemon) {
      seen_gen = gen_->id;
      last_daemon = progress;
      daemon_change = t;
    } else if (t - daemon_change > limit) {
      // Only now count the Dirty chunks (a scan of every chunk): no work is no stall.
      if (gen_->bitmap->failed() || gen_->bitmap->counts().dirty == 0) {
        daemon_change = t;
        continue;
      }
      lk.unlock();
      stalled("daemon", std::chrono::duration<double>(t - daemon_change).count());
    }
  }
}

// ------------------------------------------------------------------ control

// A sync failed (--faults): check S5 on the failed bitmap, then replace it.
void Torture::handle_failure() {
  Actor& me = *actors_.front();
  me.set(kPausing);
  gate_.pause();  // every write in flight ends first
  me.set(kSwap);
  std::lock_guard lk(gen_mu_);
  Generation& g = *gen_;
  if (!g.oracle->failed_sync())
    violation(g_violations.s5, "S5: the bitmap is failed but no sync failed");
  // Every later write is refused.
  const std::error_code ec = g.bitmap->start_write(0, 4096);
  if (ec != Errc::bitmap_failed) {
    violation(g_violations.s5, "S5: start_write on a failed bitmap returned '%s'",
              ec.message().c_str());
    if (!ec) g.bitmap->end_write(0, 4096);
  }
  // The durable superblock says stale; reopening resyncs every chunk that was written.
  std::vector<std::byte> durable = g.storage->durable_image();
  if (durable != g.oracle->file())
    violation(g_violations.s5, "the oracle's durable image differs from the storage's");
  const DecodedFile d = decode_file(durable);
  if (!d.sb || (d.sb->state & (kSbStale | kSbWriteError)) == 0)
    violation(g_violations.s5, "S5: the failed bitmap's durable superblock is not marked stale");
  const std::vector<std::uint8_t> started = g.oracle->started();
  const std::vector<std::uint8_t> attempted = g.oracle->attempted();
  std::vector<std::uint64_t> must;
  for (std::uint64_t c = 0; c < geo_.chunks(); ++c)
    if (started[c]) must.push_back(c);
  const std::vector<std::uint8_t> got =
      check_reopen(durable, must, "reopen after a failed sync", false);
  // A chunk never written stays Unwritten, unless its whole block is unverifiable (the
  // failed round's write was dropped while its checksum entry landed): fail-safe.
  for (std::uint64_t c = 0; c < got.size(); ++c) {
    const bool block_ok = d.sb && d.block_ok[geo_.block_of_chunk(c)];
    if (!attempted[c] && block_ok && got[c] != kUnwritten)
      violation(g_violations.s5, "S5: chunk %" PRIu64 " was never written but reopens as %u", c,
                got[c]);
  }
  // close() must neither hang nor pretend success.
  me.set(kCheck);
  const std::error_code cec = g.bitmap->close();
  if (cec != Errc::bitmap_failed)
    violation(g_violations.s5, "S5: close() of a failed bitmap returned '%s'",
              cec.message().c_str());
  ++faults_handled_;
  retire_generation(std::move(gen_));
  gen_ = make_generation();
  cur_.store(gen_.get(), std::memory_order_release);
  fault_armed_ = false;
  gate_.resume();
}

void Torture::print_stats(const char* tag) {
  std::uint64_t wmin = UINT64_MAX, wmax = 0;
  for (const auto& a : actors_) {
    if (a->name.rfind("writer", 0) != 0) continue;
    wmin = std::min(wmin, a->ops.load());
    wmax = std::max(wmax, a->ops.load());
  }
  BitmapStats s{};
  {
    std::lock_guard lk(gen_mu_);
    s = gen_->bitmap->stats();
  }
  std::printf("llbitmap_torture: %s t=%.0fs writes=%" PRIu64 " min/max=%" PRIu64 "/%" PRIu64
              " gen=%d cleaned=%" PRIu64 " timeouts=%" PRIu64 " stutters=%" PRIu64
              " flushes=%" PRIu64 " violations=%" PRIu64 "\n",
              tag, seconds_since(start_), writes_ok_.load(), wmin, wmax, generations_,
              totals_.pages_cleaned + s.pages_cleaned,
              totals_.suspend_timeouts + s.suspend_timeouts, stutters_.load(), flushes_,
              g_violations.total());
  std::fflush(stdout);
}

// After every actor stopped: flush, then everything must be clean, in memory and on
// "disk", and reopen unchanged.
void Torture::final_checks() {
  Actor& me = *actors_.front();
  me.set(kCheck);
  std::lock_guard lk(gen_mu_);
  Generation& g = *gen_;
  if (g.bitmap->failed()) {
    // The run ended between a failure and its replacement: check S5 on it instead.
    std::fprintf(stderr, "llbitmap_torture: the last bitmap is failed; checking it as such\n");
    return;
  }
  if (g.oracle->in_flight() != 0)
    violation(g_violations.final_state, "%zu writes still in flight after quiesce",
              g.oracle->in_flight());
  // A quiesced bitmap drains at once; the long timeout only keeps a slow grace period
  // (sanitizers) from turning into a suspend timeout.
  (void)g.bitmap->set_daemon_sleep(1000ms);
  if (const std::error_code ec = g.bitmap->flush())
    violation(g_violations.final_state, "final flush failed: %s", ec.message().c_str());
  const StateCounts n = g.bitmap->counts();
  const std::uint64_t sum = n.unwritten + n.clean + n.dirty + n.need_sync + n.syncing;
  if (sum != geo_.chunks() || n.dirty != 0 || n.need_sync != 0 || n.syncing != 0)
    violation(g_violations.final_state,
              "after quiesce+flush: unwritten=%" PRIu64 " clean=%" PRIu64 " dirty=%" PRIu64
              " need_sync=%" PRIu64 " syncing=%" PRIu64 " (sum %" PRIu64 ", chunks %" PRIu64 ")",
              n.unwritten, n.clean, n.dirty, n.need_sync, n.syncing, sum, geo_.chunks());
  const std::vector<std::uint8_t> started = g.oracle->started();
  const std::vector<std::uint8_t> attempted = g.oracle->attempted();
  std::vector<std::byte> durable = g.storage->durable_image();
  if (durable != g.oracle->file())
    violation(g_violations.final_state, "the oracle's durable image differs from the storage's");
  const DecodedFile d = decode_file(durable);
  std::uint64_t durable_dirty = 0, bad = 0;
  for (std::uint64_t c = 0; c < geo_.chunks(); ++c) {
    const std::uint8_t mem = to_byte(g.bitmap->state(c));
    const std::uint8_t want = started[c] ? kClean : kUnwritten;
    if (!d.sb) break;
    if (d.bytes[c] == kDirty) ++durable_dirty;
    if ((mem != want && !(attempted[c] && !started[c] && mem == kClean)) || d.bytes[c] != mem) {
      if (bad++ < 3)
        violation(g_violations.final_state,
                  "chunk %" PRIu64 ": memory %u, durable %u, expected %u (started %u)", c, mem,
                  d.bytes[c], want, started[c]);
    }
  }
  if (!d.sb) violation(g_violations.final_state, "the final durable superblock does not decode");
  if (durable_dirty != 0)
    violation(g_violations.final_state, "%" PRIu64 " chunks durably Dirty after flush",
              durable_dirty);
  // A crash now loses nothing and resyncs nothing.
  std::vector<std::uint8_t> got = check_reopen(durable, {}, "reopen after the final flush", true);
  std::uint64_t resync = 0;
  for (std::uint8_t b : got) resync += b == kNeedSync ? 1 : 0;
  if (resync != 0)
    violation(g_violations.final_state,
              "%" PRIu64 " chunks NeedSync after reopening a flushed image", resync);
  // A clean shutdown, then the same.
  if (const std::error_code ec = g.bitmap->close())
    violation(g_violations.final_state, "close failed: %s", ec.message().c_str());
  durable = g.storage->durable_image();
  got = check_reopen(durable, {}, "reopen after close", true);
  resync = 0;
  for (std::uint8_t b : got) resync += b == kNeedSync ? 1 : 0;
  if (resync != 0)
    violation(g_violations.final_state,
              "%" PRIu64 " chunks NeedSync after reopening a closed image", resync);
  // S6 on the fake pages: every reference was returned.
  for (int i = 0; i < kFakePages; ++i) {
    if (fake_pages_[i]->is_suspended() || fake_inside_[i].load() != 0) {
      violation(g_violations.barrier, "fake page %d left suspended or held", i);
      continue;
    }
    if (!fake_pages_[i]->suspend(10s)) {
      violation(g_violations.barrier, "fake page %d does not drain: a reference leaked", i);
      continue;
    }
    fake_pages_[i]->resume();
  }
}

std::string Torture::summary(bool ok, const std::string& failed) {
  std::uint64_t wmin = UINT64_MAX, wmax = 0, fmin = UINT64_MAX, fmax = 0, fops = 0;
  for (const auto& a : actors_) {
    const std::uint64_t n = a->ops.load();
    if (a->name.rfind("writer", 0) == 0) {
      wmin = std::min(wmin, n);
      wmax = std::max(wmax, n);
    } else if (a->name.rfind("fake-writer", 0) == 0) {
      fmin = std::min(fmin, n);
      fmax = std::max(fmax, n);
      fops += n;
    }
  }
  PageBarrier::Stats fs{};
  for (const auto& p : fake_pages_) {
    const PageBarrier::Stats s = p->stats();
    fs.raise_waits += s.raise_waits;
    fs.suspends += s.suspends;
    fs.suspend_waits += s.suspend_waits;
    fs.suspend_timeouts += s.suspend_timeouts;
  }
  const auto area = detail::PercpuRegistry::instance().stats();
  const double secs = seconds_since(start_);
  char buf[4096];
  std::snprintf(
      buf, sizeof buf,
      "llbitmap_torture: %s seed=%" PRIu64
      " secs=%.1f writers=%d fake_writers=%d faults=%d churn=%d"
      " daemon_sleep_ms=%lld barrier_idle_ms=%lld"
      " | writes=%" PRIu64 " (%.0f/s) writer_min=%" PRIu64 " writer_max=%" PRIu64
      " fake_ops=%" PRIu64 " fake_min=%" PRIu64 " fake_max=%" PRIu64 " churn_threads=%" PRIu64
      " generations=%d"
      " | s1=%" PRIu64 " s2=%" PRIu64 " s4=%" PRIu64 " s5=%" PRIu64 " integrity=%" PRIu64
      " s6_fake=%" PRIu64 " errors=%" PRIu64 " final=%" PRIu64 " memory=%" PRIu64
      " | fake_raise_waits=%" PRIu64 " fake_suspends=%" PRIu64 " fake_suspend_waits=%" PRIu64
      " fake_suspend_timeouts=%" PRIu64
      " bm_raise_waits=%s bm_suspend_waits=%s"
      " pages_cleaned=%" PRIu64 " daemon_passes=%" PRIu64 " suspend_timeouts=%" PRIu64
      " persist_rounds=%" PRIu64 " persist_waits=%" PRIu64 " blocks_written=%" PRIu64
      " stutters=%" PRIu64 " flushes=%" PRIu64 " flush_errors=%" PRIu64 " reopen_checks=%" PRIu64
      " faults_armed=%" PRIu64 " faults_checked=%" PRIu64 " err_eio=%" PRIu64
      " err_bitmap_failed=%" PRIu64 " counter_areas=%zu counter_bytes=%zu | %s%s%s",
      ok ? "SUCCESS" : "FAILURE", opt_.seed, secs, opt_.writers, opt_.fake_writers,
      opt_.faults ? 1 : 0, opt_.churn ? 1 : 0, static_cast<long long>(daemon_sleep_.count()),
      static_cast<long long>(barrier_idle_.count()), writes_ok_.load(),
      secs > 0 ? static_cast<double>(writes_ok_.load()) / secs : 0.0, wmin, wmax, fops, fmin, fmax,
      churn_threads_.load(), generations_, g_violations.s1.load(), g_violations.s2.load(),
      g_violations.s4.load(), g_violations.s5.load(), g_violations.integrity.load(),
      g_violations.barrier.load(), g_violations.errors.load(), g_violations.final_state.load(),
      g_violations.memory.load(), fs.raise_waits, fs.suspends, fs.suspend_waits,
      fs.suspend_timeouts, bm_page_stats_ ? std::to_string(bm_raise_waits_).c_str() : "n/a",
      bm_page_stats_ ? std::to_string(bm_suspend_waits_).c_str() : "n/a", totals_.pages_cleaned,
      totals_.daemon_passes, totals_.suspend_timeouts, totals_.persist_rounds,
      totals_.persist_waits, totals_.blocks_written, stutters_.load(), flushes_, flush_errors_,
      snapshots_checked_, faults_armed_, faults_handled_, err_eio_.load(), err_failed_.load(),
      area.areas, area.bytes, ok ? "" : "!!! failed: ", failed.c_str(), ok ? "" : " !!!");
  return buf;
}

int Torture::run() {
  std::printf("llbitmap_torture: seed=%" PRIu64 "\n", opt_.seed);
  std::printf(
      "llbitmap_torture: duration=%.0fs writers=%d fake_writers=%d faults=%d churn=%d "
      "daemon_sleep=%lldms barrier_idle=%lldms chunks=%" PRIu64 " pages=%" PRIu64 "\n",
      opt_.duration, opt_.writers, opt_.fake_writers, opt_.faults ? 1 : 0, opt_.churn ? 1 : 0,
      static_cast<long long>(daemon_sleep_.count()), static_cast<long long>(barrier_idle_.count()),
      geo_.chunks(), geo_.pages());
  std::fflush(stdout);
#ifdef LLBM_SYNC_POINTS
  if (opt_.yield) {
    for (const char* point :
         {"start_write:after_raise", "start_write:after_mark", "persist:after_snapshot",
          "persist:before_sync", "daemon:after_suspend", "daemon:before_resume",
          "barrier:after_kill", "barrier:raise_wait"}) {
      detail::SyncPoints::set(point, [] {
        thread_local Rng r(std::hash<std::thread::id>{}(std::this_thread::get_id()));
        if (r.chance(30)) std::this_thread::yield();
      });
    }
  }
  if (opt_.bug_mark_before_raise) detail::test_hooks().mark_before_raise.store(true);
#endif
  const detail::AreaStats areas_before = detail::PercpuRegistry::instance().stats();
  gen_ = make_generation();
  cur_.store(gen_.get(), std::memory_order_release);
  start_ = now();

  Actor& control = add_actor("control");
  std::vector<std::pair<Actor*, int>> plan;  // actor, kind
  for (int i = 0; i < opt_.writers; ++i)
    plan.emplace_back(&add_actor("writer-" + std::to_string(i)), 0);
  for (int i = 0; i < opt_.fake_writers; ++i)
    plan.emplace_back(&add_actor("fake-writer-" + std::to_string(i)), 1);
  plan.emplace_back(&add_actor("fake-daemon"), 2);
  plan.emplace_back(&add_actor("stutter"), 3);
  if (opt_.churn) plan.emplace_back(&add_actor("churn"), 4);
  std::thread watchdog([this] { watchdog_main(); });
  for (auto& [a, kind] : plan) {
    const std::uint64_t s = rng_.next();
    Actor* actor = a;
    switch (kind) {
      case 0:
        threads_.emplace_back([this, actor, s] { writer_main(*actor, s); });
        break;
      case 1:
        threads_.emplace_back([this, actor, s] { fake_writer_main(*actor, s); });
        break;
      case 2:
        threads_.emplace_back([this, actor, s] { fake_daemon_main(*actor, s); });
        break;
      case 3:
        threads_.emplace_back([this, actor, s] { stutter_main(*actor, s); });
        break;
      default:
        threads_.emplace_back([this, actor, s] { churn_main(*actor, s); });
        break;
    }
  }

  // The control loop: flushes, reopen checks of sync-time images, faults, stat lines.
  const SteadyTime end = start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                      std::chrono::duration<double>(opt_.duration));
  SteadyTime next_flush = now() + std::chrono::milliseconds(rng_.range(20, 200));
  SteadyTime next_snapshot = now() + 250ms;
  SteadyTime next_fault = now() + std::chrono::milliseconds(rng_.range(300, 2000));
  SteadyTime next_stat = now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                     std::chrono::duration<double>(opt_.stat_interval));
  while (now() < end) {
    control.set(kSleep);
    std::this_thread::sleep_for(2ms);
    control.ops.fetch_add(1, std::memory_order_relaxed);
    Generation* g = gen_.get();  // only this thread replaces it
    g->storage->clear_trace();   // the storage records every write: keep memory flat
    const SteadyTime t = now();
    if (t >= next_flush) {
      control.set(kFlush);
      const std::error_code ec = g->bitmap->flush();
      ++flushes_;
      if (ec) {
        ++flush_errors_;
        if (!opt_.faults || !(ec == std::errc::io_error || ec == Errc::bitmap_failed))
          violation(g_violations.errors, "flush failed: %s", ec.message().c_str());
      }
      next_flush = now() + std::chrono::milliseconds(rng_.range(20, 200));
    }
    if (t >= next_snapshot) {
      control.set(kCheck);
      if (std::optional<Snapshot> s = g->oracle->take_snapshot()) {
        check_reopen(s->file, s->in_flight, "reopen of a sync-time image",
                     !g->oracle->failed_sync());
        ++snapshots_checked_;
      }
      g->oracle->request_snapshot();
      next_snapshot = now() + std::chrono::milliseconds(rng_.range(100, 400));
    }
    if (opt_.faults) {
      if (!fault_armed_ && t >= next_fault) {
        // EIO on one of the next few syncs, whoever makes it (writer, daemon, flush).
        g->storage->fail_sync(rng_.range(1, 4));
        fault_armed_ = true;
        fault_armed_at_ = t;
        ++faults_armed_;
      } else if (fault_armed_ && g->bitmap->failed()) {
        handle_failure();
        next_fault = now() + std::chrono::milliseconds(rng_.range(300, 2000));
      } else if (fault_armed_ && t - fault_armed_at_ > std::chrono::duration<double>(opt_.stall)) {
        violation(g_violations.s5,
                  "an armed sync fault never failed the bitmap (%" PRIu64 " syncs seen)",
                  g->oracle->syncs_seen());
        g->storage->clear_faults();
        fault_armed_ = false;
      } else if (fault_armed_ && !g->bitmap->failed() && g->oracle->failed_sync()) {
        // The hook saw the failed sync; the bitmap must report failed right after the
        // round that made it returns (checked on the next iterations).
      }
    }
    if (t >= next_stat) {
      print_stats("progress");
      next_stat = now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(opt_.stat_interval));
    }
  }

  // Quiesce: stop every actor and wait for them.
  control.set(kJoin);
  stop_.store(true);
  for (auto& t : threads_) t.join();
  if (opt_.faults && gen_->bitmap->failed()) handle_failure();
  final_checks();
  {
    std::lock_guard lk(watchdog_mu_);
    watchdog_stop_ = true;
  }
  watchdog_cv_.notify_all();
  watchdog.join();
  {
    std::lock_guard lk(gen_mu_);
    retire_generation(std::move(gen_));
  }
  // Threads that exited gave their counter memory back (a few library threads and this
  // one may still hold an area).
  const detail::AreaStats areas_after = detail::PercpuRegistry::instance().stats();
  if (areas_after.areas > areas_before.areas + 3)
    violation(g_violations.memory,
              "%zu per-thread counter areas after every actor exited (%zu before)",
              areas_after.areas, areas_before.areas);

  // Engagement: each of these must have happened, or the run proved nothing.
  std::string failed;
  auto need = [&](const char* name, std::uint64_t v) {
    if (v == 0) failed += std::string(failed.empty() ? "" : ",") + name + "=0";
  };
  PageBarrier::Stats fs{};
  for (const auto& p : fake_pages_) {
    fs.raise_waits += p->stats().raise_waits;
    fs.suspend_waits += p->stats().suspend_waits;
  }
  need("writes", writes_ok_.load());
  need("fake_raise_waits", fs.raise_waits);
  need("fake_suspend_waits", fs.suspend_waits);
  if (bm_page_stats_) {
    need("bm_raise_waits", bm_raise_waits_);
    need("bm_suspend_waits", bm_suspend_waits_);
  }
  need("pages_cleaned", totals_.pages_cleaned);
  need("persist_waits", totals_.persist_waits);
  need("stutters", stutters_.load());
  need("flushes", flushes_);
  need("reopen_checks", snapshots_checked_);
  for (const auto& a : actors_)
    if (a->name.rfind("writer", 0) == 0 || a->name.rfind("fake-writer", 0) == 0)
      need((a->name + "_ops").c_str(), a->ops.load());
  if (opt_.faults) need("faults_checked", faults_handled_);
  if (opt_.churn) need("churn_threads", churn_threads_.load());
  if (g_violations.total() != 0)
    failed += std::string(failed.empty() ? "" : ",") +
              "violations=" + std::to_string(g_violations.total());
  const bool ok = failed.empty();
  std::printf("%s\n", summary(ok, failed).c_str());
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace llbitmap::torture

int main(int argc, char** argv) {
  llbitmap::torture::Options o = llbitmap::torture::parse(argc, argv);
  if (!o.seed_given)
    o.seed = std::random_device{}() * 0x100000001ull ^ static_cast<std::uint64_t>(::getpid());
  llbitmap::torture::Torture t(o);
  return t.run();
}
