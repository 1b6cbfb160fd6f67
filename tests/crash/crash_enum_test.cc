// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Crash-state enumeration (docs/testing.md#crash-enumeration): proves that no power cut, at any
// moment of a workload, leaves a bitmap file from which recovery would skip a chunk whose copies
// may differ (S1, S2, S4, S5: docs/design.md#safety-invariants).
//
// A single-threaded driver plays small random workloads over a FaultStorage: up to 3
// logical writers, each with at most one write in flight, on ranges of 1-3 chunks in
// the first 4 pages (page and block boundaries are the hot spots), daemon passes with a
// fake clock and a tiny barrier_idle (some with a write still in flight), flushes,
// discards, resyncs, degraded mode, parity and assume_clean bitmaps, crashes with a
// reopen in mid-workload, and an fdatasync failure. The storage's sync hook records
// every sync boundary (the durable image and the writes about to become durable) with
// the chunks that must reopen NeedSync at that moment:
//
//   - every chunk with a write issued (start_write returned) and not ended (S1);
//   - every chunk that needs a resync and whose need is durable (NeedSync or Syncing in
//     memory, Dirty/NeedSync/Syncing on the medium: after a crash, a degraded or parity
//     write, an aborted resync). It keeps needing it through any crash, recovery
//     included, until its resync ends (end_sync, close_sync) or it is discarded (S4).
//
// After the operation returns, every crash image a disk could hold at that boundary
// (tests/support/crash_images.h: every subset of the unsynced writes up to 2^6, sampled
// beyond; all of them reversed; ALICE's omit-i-keep-later-j; each write torn at 512 B
// and at 4 KiB) is opened with Bitmap::open on a fresh FaultStorage and must:
//
//   - open, or be refused with an llbitmap Errc equal to what Superblock::decode says of
//     its first sector. A refusal is justified only for a crash inside create() over a
//     raw Storage, before the file is complete: nothing landed yet or a torn first
//     sector (not_a_bitmap), or a file cut short (size_mismatch). Any later image must
//     open: a bitmap that no longer opens after a crash would cost a full rebuild;
//   - keep the geometry;
//   - show every must-resync chunk as NeedSync (never Clean, Unwritten or Dirty);
//   - show every other chunk in a state it held in memory at some point (Unwritten or
//     Clean, Reload having turned Dirty and Syncing into NeedSync) or NeedSync: nothing
//     comes back Dirty, or Clean out of nowhere;
//   - S5: once a failed bitmap's stale marker is durable, be stale; a stale image
//     reopens no chunk Clean;
//   - list, in needs_recovery(), every chunk with a write in flight and every
//     must-resync chunk, and give needs_sync() / needs_recovery() / needs_rebuild()
//     exactly the runs of its NeedSync+Syncing / +Dirty / not-Unwritten chunks (merged,
//     clipped to the device), so each view contains the one before;
//   - identity: half of the workloads bind the bitmap to a device uuid; their images
//     are opened with it, and must be refused with Errc::foreign_bitmap (image
//     untouched) when opened for another device; no image carries events older than
//     the events() the engine recorded after its last open (so OpenOptions::min_events
//     never opens a crash image out of date, which crash_and_reopen also checks).
//
// The same checks run between operations and when start_write returns (the views on
// the live bitmap too: needs_recovery() covers every write in flight); there the
// durable image alone must already hold each of its chunks Dirty or NeedSync (Syncing
// if it was being resynced) in a block whose checksum verifies (S2). A failed bitmap
// must have made its stale marker durable with its last sync, and after an idle final
// flush no chunk may be durably Dirty (eventual cleaning). Crashes in mid-workload
// continue from a random crash image, so the sync boundaries of recovery itself are
// enumerated too. A self-test drives a disk that acknowledges a flush it did not do:
// the checker must report violations there, so a pass here is not vacuous; engagement
// counters fail the run if no torn block, creation crash, stale image or pass with a
// write in flight was ever reached.
//
// Size: LLBM_CRASH_SCALE (a factor, default 1) scales the number of workloads; Debug
// and sanitizer builds run fewer. `--exhaustive` (or LLBM_CRASH_EXHAUSTIVE=1) runs ten
// times the workloads, longer ones, and every subset up to 2^10 writes (the ctest test
// crash_enum_exhaustive, label soak). LLBM_CRASH_SEED sets the base seed;
// LLBM_CRASH_ONLY=<workload seed> replays one workload.
#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/clock.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/testing/fault_storage.h>

#include <gtest/gtest.h>
#include <urcu-bp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bitmap_fixture.h"
#include "crash_images.h"
#include "crash_knobs.h"
#include "image_states.h"
#include "start_gate.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LLBM_CRASH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LLBM_CRASH_SANITIZED 1
#endif
#endif

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
using test::CrashImageOptions;
using test::CrashSelection;

// ------------------------------------------------------------------ run size

struct RunSize {
  int workloads = 0;
  int ops_min = 0, ops_max = 0;
  CrashImageOptions images;
  std::uint64_t base_seed = 0;
  std::optional<std::uint64_t> only;  // replay one workload seed
};

RunSize run_size() {
#if defined(LLBM_CRASH_SANITIZED)
  const int workloads = 30;
#elif !defined(NDEBUG)
  const int workloads = 80;
#else
  const int workloads = 600;
#endif
  const test::CrashKnobs k = test::crash_knobs(workloads, 0x6c6c626d5f63726dULL);
  RunSize r;
  r.workloads = k.workloads;
  r.base_seed = k.base_seed;
  r.only = k.only;
  r.ops_min = k.exhaustive ? 40 : 20;
  r.ops_max = k.exhaustive ? 90 : 45;
  r.images.exhaustive_writes = k.exhaustive ? 10 : 6;
  r.images.samples = k.exhaustive ? 1000 : 64;
  return r;
}

// ------------------------------------------------------------------ totals

struct Totals {
  std::uint64_t workloads = 0, ops = 0, sync_boundaries = 0, moments = 0, selections = 0,
                image_checks = 0, images_opened = 0, refused = 0, bad_block_images = 0,
                stale_images = 0, must_checks = 0, s2_checks = 0, crash_reopens = 0,
                sync_failures = 0, writes_in_flight_at_pass = 0, max_pending = 0,
                sampled_moments = 0, violations = 0, bound_workloads = 0, foreign_checks = 0,
                live_view_checks = 0;
  std::map<std::string, std::uint64_t> refused_by;  // "phase: error" -> distinct images

  std::string summary() const {
    std::string by;
    for (const auto& [k, v] : refused_by)
      by += (by.empty() ? "" : ", ") + k + " " + std::to_string(v);
    char buf[2048];
    std::snprintf(buf, sizeof buf,
                  "crash-enum: workloads %" PRIu64 ", ops %" PRIu64 ", sync boundaries %" PRIu64
                  ", moments %" PRIu64 " (up to %" PRIu64 " unsynced writes, %" PRIu64
                  " sampled beyond the subset bound), crash images checked %" PRIu64 " (%" PRIu64
                  " distinct opened), refused %" PRIu64 " {%s}, with a bad block %" PRIu64
                  ", stale %" PRIu64 ", must-resync chunk checks %" PRIu64 ", S2 checks %" PRIu64
                  ", crash+reopen %" PRIu64 ", sync failures %" PRIu64
                  ", passes with a write in flight %" PRIu64 ", bound workloads %" PRIu64
                  ", foreign-device refusals checked %" PRIu64 ", live view checks %" PRIu64
                  ", violations %" PRIu64,
                  workloads, ops, sync_boundaries, moments, max_pending, sampled_moments,
                  image_checks, images_opened, refused, by.c_str(), bad_block_images, stale_images,
                  must_checks, s2_checks, crash_reopens, sync_failures, writes_in_flight_at_pass,
                  bound_workloads, foreign_checks, live_view_checks, violations);
    return buf;
  }
};

// ------------------------------------------------------------------ geometries

struct Config {
  const char* name;
  std::uint64_t device, chunk, space;
  std::uint32_t block;
};

// Each has at least 4 pages of states.
constexpr Config kConfigs[] = {
    {"1GiB/64KiB chunks/4KiB blocks", 1ull << 30, 64 << 10, 128 << 10, 4096},   // 5 pages
    {"48MiB/4KiB chunks/512B blocks", 48ull << 20, 4 << 10, 16 << 10, 512},     // 4 pages
    {"100MiB/4KiB chunks/2KiB blocks", 100ull << 20, 4 << 10, 32 << 10, 2048},  // 7 pages
};

// A disk that acknowledges a flush without doing it, every other time (self-test only).
class SkippingFlushStorage final : public Storage {
 public:
  explicit SkippingFlushStorage(std::unique_ptr<FaultStorage> inner) : inner_(std::move(inner)) {}
  std::error_code read(std::uint64_t o, std::span<std::byte> out) override {
    return inner_->read(o, out);
  }
  std::error_code write(std::uint64_t o, std::span<const std::byte> d) override {
    return inner_->write(o, d);
  }
  std::error_code sync() override {
    if (++calls_ % 2 == 0) return {};  // the lie
    return inner_->sync();
  }
  std::error_code size(std::uint64_t& b) override { return inner_->size(b); }

 private:
  std::unique_ptr<FaultStorage> inner_;
  std::uint64_t calls_ = 0;
};

enum class DiskMode { kHonest, kSkipsFlushes };

using Runs = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

// The runs a view must give for the chunks `pick` selects: clipped, merged, ascending.
template <class Pick>
Runs expected_runs(const Geometry& g, const std::vector<ChunkState>& states, Pick pick) {
  Runs runs;
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    if (!pick(states[c])) continue;
    const std::uint64_t off = c * g.chunk_bytes();
    const std::uint64_t len = std::min(g.chunk_bytes(), g.device_bytes() - off);
    if (!runs.empty() && runs.back().first + runs.back().second == off)
      runs.back().second += len;
    else
      runs.emplace_back(off, len);
  }
  return runs;
}

// needs_sync / needs_recovery / needs_rebuild of `b` against its states, and every chunk
// of `must` (writes in flight, chunks that must be resynced) in needs_recovery. Empty
// if all is well, else what is wrong.
std::string check_views(const Bitmap& b, const std::vector<std::uint64_t>& must) {
  const Geometry& g = b.geometry();
  std::vector<ChunkState> states(g.chunks());
  for (std::uint64_t c = 0; c < g.chunks(); ++c) states[c] = b.state(c);
  if (b.needs_sync() != expected_runs(g, states, [](ChunkState s) { return needs_sync(s); }))
    return "needs_sync() is not the runs of the NeedSync and Syncing chunks";
  if (b.needs_recovery() != expected_runs(g, states, [](ChunkState s) { return is_dirty_like(s); }))
    return "needs_recovery() is not the runs of the Dirty, NeedSync and Syncing chunks";
  if (b.needs_rebuild() !=
      expected_runs(g, states, [](ChunkState s) { return s != ChunkState::kUnwritten; }))
    return "needs_rebuild() is not the runs of every chunk that is not Unwritten";
  for (const std::uint64_t c : must)
    if (!is_dirty_like(states[c]))
      return "chunk " + std::to_string(c) + " must be recovered but needs_recovery() leaves it (" +
             std::string(to_string(states[c])) + ")";
  return {};
}

// Closes a bitmap with no write in flight. Should close() ever report Errc::busy for an
// idle bitmap again (see CrashEnumRegression below), ~Bitmap() would abort and take the
// whole run with it: retry instead (a busy close leaves the bitmap open and usable); the
// regression test is what reports it.
std::error_code close_idle(Bitmap& bm) {
  std::error_code ec;
  for (int i = 0; i < 50; ++i)
    if ((ec = bm.close()) != Errc::busy) break;
  return ec;
}

// ------------------------------------------------------------------ one workload

class Workload {
 public:
  Workload(std::uint64_t seed, const RunSize& size, Totals& totals, DiskMode disk)
      : seed_(seed), size_(size), totals_(totals), disk_(disk), rng_(seed) {}

  void run() {
    const Config& cfg = kConfigs[rng_() % std::size(kConfigs)];
    cfg_ = &cfg;
    // From the seed, not from rng_: the workloads' other choices stay what they were.
    bound_ = (seed_ >> 17 & 1) != 0;
    for (std::size_t i = 0; i < device_.size(); ++i)
      device_[i] = static_cast<std::uint8_t>(seed_ >> (8 * (i % 8)) ^ (0x5a + i));
    if (bound_) ++totals_.bound_workloads;
    assume_clean_ = rng_() % 5 == 0;
    parity_ = rng_() % 7 == 0;
    writers_.resize(1 + rng_() % 3);
    may_fail_sync_ = rng_() % 10 == 0;
    const int ops = size_.ops_min + static_cast<int>(rng_() % (size_.ops_max - size_.ops_min + 1));
    create();
    if (!bm_) return;
    for (op_ = 0; op_ < ops && bm_; ++op_) step();
    if (bm_) finish();
    ++totals_.workloads;
  }

 private:
  enum class Phase { kCreate, kRecover, kRun };

  struct Writer {
    bool busy = false;
    std::uint64_t off = 0, len = 0, first = 0, last = 0;
  };

  // A moment at which the machine may lose power.
  struct Moment {
    std::string where;
    std::vector<std::byte> durable;
    std::vector<PendingWrite> pending;
    std::vector<std::uint64_t> must;  // chunks that must reopen NeedSync
    bool may_refuse = false;          // creation not finished
    bool must_be_stale = false;       // the stale marker of a failed bitmap is durable
    std::uint64_t min_events = 0;     // the events() the engine recorded (0 during create)
  };

  // What opening one image gives (cached by image contents).
  struct Verdict {
    std::error_code ec;         // open's error
    std::error_code decode_ec;  // Superblock::decode's, on the same bytes
    bool geometry_ok = false;
    bool stale = false;                                           // its superblock says so
    std::vector<std::uint8_t> states;                             // every chunk after open
    std::vector<std::pair<std::uint64_t, std::uint8_t>> changed;  // chunks != initial state
    std::string views;                                            // check_views' complaint
    std::uint64_t events = 0;                                     // the stored superblock's
    std::string identity;  // what went wrong opening it for another device
  };

  // An image's identity: the sum of a 64-bit hash of every 512-byte sector (mixed with
  // its index), and its size. A sum lets a selection's key be computed from the durable
  // image's key and the few sectors its writes touch, so most images are never built:
  // only those not seen before are, to be opened.
  struct ImageKey {
    std::uint64_t h;
    std::size_t size;
    bool operator==(const ImageKey&) const = default;
  };
  struct ImageKeyHash {
    std::size_t operator()(const ImageKey& k) const noexcept { return k.h ^ k.size; }
  };

  static std::uint64_t sector_hash(std::uint64_t index, std::span<const std::byte> s) {
    std::uint64_t h = 0x9e3779b97f4a7c15ULL * (index + 1) ^ s.size();
    std::size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      h = (h ^ w) * 0xff51afd7ed558ccdULL;
      h ^= h >> 32;
    }
    for (; i < s.size(); ++i) h = (h ^ std::to_integer<std::uint64_t>(s[i])) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 29);
  }

  class ImageHasher {
   public:
    explicit ImageHasher(std::span<const std::byte> base) : base_(base) {
      const std::size_t n = (base.size() + kSector - 1) / kSector;
      sectors_.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        sectors_[i] =
            sector_hash(i, base.subspan(i * kSector, std::min(kSector, base.size() - i * kSector)));
        total_ += sectors_[i];
      }
    }
    [[nodiscard]] ImageKey key() const { return ImageKey{total_, base_.size()}; }

    // The key of build_crash_image(base, pending, sel), without building it; nullopt
    // if the selection grows the image (then build it and hash it whole).
    [[nodiscard]] std::optional<ImageKey> key(std::span<const PendingWrite> pending,
                                              const CrashSelection& sel) const {
      if (base_.size() % kSector != 0) return std::nullopt;
      std::map<std::uint64_t, std::array<std::byte, kSector>> over;
      auto touch = [&](std::uint64_t off, std::span<const std::byte> d) {
        if (off > base_.size() || d.size() > base_.size() - off) return false;
        while (!d.empty()) {
          const std::uint64_t sec = off / kSector;
          auto [it, fresh] = over.try_emplace(sec);
          if (fresh) std::memcpy(it->second.data(), base_.data() + sec * kSector, kSector);
          const std::size_t at = off % kSector;
          const std::size_t n = std::min(kSector - at, d.size());
          std::memcpy(it->second.data() + at, d.data(), n);
          off += n;
          d = d.subspan(n);
        }
        return true;
      };
      for (std::size_t i : sel.order)
        if (!touch(pending[i].offset, pending[i].data)) return std::nullopt;
      if (sel.torn && !test::for_each_landed_unit(pending[sel.torn->index], *sel.torn, touch))
        return std::nullopt;
      std::uint64_t t = total_;
      for (const auto& [sec, buf] : over) t += sector_hash(sec, buf) - sectors_[sec];
      return ImageKey{t, base_.size()};
    }

   private:
    static constexpr std::size_t kSector = 512;
    std::span<const std::byte> base_;
    std::vector<std::uint64_t> sectors_;
    std::uint64_t total_ = 0;
  };

  // ---------------------------------------------------------------- reporting

  void violation(const std::string& what) {
    ++totals_.violations;
    ++violations_;
    if (disk_ == DiskMode::kSkipsFlushes) {  // the self-test expects these: show the first
      if (totals_.violations == 1)
        std::printf("  first one: %s: %s\n", where_.c_str(), what.c_str());
      return;
    }
    if (violations_ <= 8) {
      ADD_FAILURE() << "workload seed 0x" << std::hex << seed_ << std::dec << " (" << cfg_->name
                    << ", " << writers_.size() << " writers"
                    << (assume_clean_ ? ", assume_clean" : "") << (parity_ ? ", parity" : "")
                    << "), " << where_ << ": " << what << "\n  replay: LLBM_CRASH_ONLY=0x"
                    << std::hex << seed_;
    }
  }

  // ---------------------------------------------------------------- observation

  std::uint8_t init_state() const { return assume_clean_ ? 1 : 0; }

  // Records the states every chunk holds in memory now.
  void observe() {
    if (!bm_) return;
    for (std::uint64_t c = 0; c < geo_.chunks(); ++c)
      held_[c] |= static_cast<std::uint8_t>(1u << to_byte(bm_->state(c)));
  }

  // After an operation: a chunk that needs a resync (NeedSync or Syncing in memory) and
  // that a crash now would resync (durably Dirty, NeedSync, Syncing or unverifiable)
  // must keep needing it, across any crash, until its resync ends (end_sync,
  // close_sync) or its data is discarded. Also notes a durable stale marker.
  void note_needs_sync() {
    const std::vector<std::byte> file = st_->durable_image();
    const auto dur = test::image_states(file);
    if (dur.size() == geo_.chunks()) {
      for (std::uint64_t c = 0; c < geo_.chunks(); ++c) {
        const ChunkState s = bm_->state(c);
        if ((s == ChunkState::kNeedSync || s == ChunkState::kSyncing) &&
            (!dur[c] || is_dirty_like(static_cast<ChunkState>(*dur[c]))))
          must_resync_.insert(c);
      }
    }
    if (bm_->failed() && test::image_is_stale(file)) stale_durable_ = true;
    // S5: a failed bitmap marks its superblock stale with its one last sync (best
    // effort: that sync happened, so the marker must be durable).
    if (bm_->failed() && synced_after_failure_ && !stale_durable_ && disk_ == DiskMode::kHonest)
      violation("S5: the bitmap failed and synced again, yet its superblock is not stale");
  }

  std::vector<std::uint64_t> must_set() const {
    std::set<std::uint64_t> s(must_resync_.begin(), must_resync_.end());
    for (const auto& [c, n] : issued_)
      if (n > 0) s.insert(c);
    return {s.begin(), s.end()};
  }

  void install_hook(FaultStorage* st) {
    st->set_sync_hook([this](const SyncEvent& ev) -> std::error_code {
      // The driver is single-threaded: the hook runs on its thread, inside a call it made.
      if (std::this_thread::get_id() != driver_) {
        ++hook_off_thread_;
        return {};
      }
      Moment m;
      m.where = where_ + ", sync #" + std::to_string(ev.seq) +
                (ev.result ? " (failing: " + ev.result.message() + ")" : "");
      m.durable.assign(ev.durable_image.begin(), ev.durable_image.end());
      m.pending.assign(ev.pending.begin(), ev.pending.end());
      m.must = must_set();
      m.may_refuse = phase_ == Phase::kCreate;
      m.must_be_stale = stale_durable_;
      m.min_events = phase_ == Phase::kCreate ? 0 : recorded_events_;
      if (ev.result)
        failing_sync_seen_ = true;
      else if (failing_sync_seen_)
        synced_after_failure_ = true;
      if (phase_ == Phase::kRun) observe();
      moments_.push_back(std::move(m));
      ++totals_.sync_boundaries;
      return {};
    });
  }

  // Checks every moment recorded since the last call.
  void drain() {
    if (hook_off_thread_ != 0) {
      violation("the sync hook ran on another thread: the single-threaded oracle is invalid");
      hook_off_thread_ = 0;
    }
    std::vector<Moment> ms;
    ms.swap(moments_);
    for (const Moment& m : ms) check_moment(m);
  }

  // A moment between operations (or right after start_write returned).
  void check_now(const std::string& what) {
    Moment m;
    m.where = where_ + ", " + what;
    m.durable = st_->durable_image();
    m.pending = st_->unsynced_writes();
    m.must = must_set();
    m.must_be_stale = stale_durable_;
    m.min_events = recorded_events_;
    check_moment(m);
  }

  void check_moment(const Moment& m) {
    ++totals_.moments;
    totals_.max_pending = std::max<std::uint64_t>(totals_.max_pending, m.pending.size());
    if (m.pending.size() > size_.images.exhaustive_writes) ++totals_.sampled_moments;
    const std::vector<CrashSelection> sels = test::crash_selections(m.pending, size_.images, rng_);
    const ImageHasher hasher(m.durable);
    for (const CrashSelection& sel : sels) {
      ++totals_.selections;
      std::vector<std::byte> img;
      std::optional<ImageKey> key = hasher.key(m.pending, sel);
      if (!key) {
        img = test::build_crash_image(m.durable, m.pending, sel);
        key = ImageHasher(img).key();
      }
      auto it = cache_.find(*key);
      if (it == cache_.end()) {
        if (img.empty()) img = test::build_crash_image(m.durable, m.pending, sel);
        it = cache_.emplace(*key, open_image(img, m)).first;
      }
      check_image(it->second, m, sel);
    }
  }

  const Verdict& verdict_of(const std::vector<std::byte>& img, const Moment& m) {
    const ImageKey key = ImageHasher(img).key();
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, open_image(img, m)).first;
    return it->second;
  }

  Verdict open_image(const std::vector<std::byte>& img, const Moment& m) {
    ++totals_.images_opened;
    Verdict v;
    const auto sb = Superblock::decode(img, v.decode_ec, img.size());
    if (sb) v.events = sb->events;
    OpenOptions oo;
    oo.start_daemon = false;
    oo.parity = parity_;
    oo.clock = &check_clock_;
    if (bound_) oo.device_uuid = device_;
    std::error_code ec;
    auto re = Bitmap::open(std::make_unique<FaultStorage>(img), oo, ec);
    v.ec = ec;
    if (re && bound_) {
      // The same image, opened for another device: refused, and not written.
      DeviceUuid other = device_;
      other[0] ^= 0xff;
      (void)test::refused_as_foreign(img, other, v.identity);
      ++totals_.foreign_checks;
    }
    if (re) {
      struct Closer {
        Bitmap& b;
        ~Closer() { (void)close_idle(b); }
      } closer{*re};
      v.geometry_ok = re->geometry() == geo_;
      if (v.geometry_ok) {
        v.states.resize(geo_.chunks());
        for (std::uint64_t c = 0; c < geo_.chunks(); ++c) {
          const std::uint8_t s = to_byte(re->state(c));
          v.states[c] = s;
          if (s != init_state()) v.changed.emplace_back(c, s);
        }
      }
      if (v.geometry_ok) v.views = check_views(*re, {});
      if (re->stats().bad_blocks > 0) ++totals_.bad_block_images;
      v.stale = sb && (sb->state & (kSbStale | kSbWriteError)) != 0;
      if (v.stale) ++totals_.stale_images;
    } else {
      ++totals_.refused;
      ++totals_.refused_by[std::string(m.may_refuse ? "create: " : "later: ") + ec.message()];
    }
    return v;
  }

  void check_image(const Verdict& v, const Moment& m, const CrashSelection& sel) {
    ++totals_.image_checks;
    auto where = [&] { return m.where + ", image " + sel.describe(); };
    if (v.ec) {
      if (v.ec.category() != llbitmap_category())
        violation(where() + ": refused with an untyped error: " + v.ec.message());
      if (v.ec != v.decode_ec)
        violation(where() + ": refused with '" + v.ec.message() +
                  "' but its superblock decodes to '" + v.decode_ec.message() + "'");
      if (!m.may_refuse)
        violation(where() +
                  ": a crash after creation left a bitmap that does not open: " + v.ec.message());
      return;
    }
    if (!v.geometry_ok) {
      violation(where() + ": reopened with another geometry");
      return;
    }
    if (!v.views.empty()) violation(where() + ": " + v.views);
    if (!v.identity.empty()) violation(where() + ": bound to its device, yet " + v.identity);
    if (v.events < m.min_events)
      violation(where() + ": its events " + std::to_string(v.events) +
                " are older than the engine's record " + std::to_string(m.min_events) +
                ": min_events would open it out of date");
    totals_.must_checks += m.must.size();
    for (std::uint64_t c : m.must) {
      const std::uint8_t s = v.states[c];
      if (s != to_byte(ChunkState::kNeedSync))
        violation(where() + ": chunk " + std::to_string(c) + " must be resynced but reopens " +
                  std::string(to_string(static_cast<ChunkState>(s))));
    }
    // S5: once a failed bitmap's stale marker is durable, every crash image is stale,
    // and a stale image resyncs every written chunk (nothing reopens Clean).
    if (m.must_be_stale && !v.stale)
      violation(where() +
                ": the stale marker of the failed bitmap was durable, this image lost it");
    if (v.stale) {
      for (const auto& [c, s] : v.changed)
        if (s == to_byte(ChunkState::kClean)) {
          violation(where() + ": stale image, yet chunk " + std::to_string(c) + " reopens clean");
          break;
        }
    }
    for (const auto& [c, s] : v.changed) {
      const bool ok = s == to_byte(ChunkState::kNeedSync) ||
                      ((s == to_byte(ChunkState::kUnwritten) || s == to_byte(ChunkState::kClean)) &&
                       (held_[c] >> s & 1) != 0);
      if (!ok)
        violation(where() + ": chunk " + std::to_string(c) + " reopens " +
                  std::string(to_string(static_cast<ChunkState>(s))) +
                  ", a state it never held (held mask 0x" + std::to_string(held_[c]) + ")");
    }
  }

  // ---------------------------------------------------------------- setup and teardown

  void create() {
    driver_ = std::this_thread::get_id();
    std::unique_ptr<Storage> storage = make_storage({});
    BitmapOptions o;
    o.device_bytes = cfg_->device;
    o.chunk_bytes = cfg_->chunk;
    o.space_bytes = cfg_->space;
    o.block_bytes = cfg_->block;
    o.daemon_sleep = 10000ms;  // see pass_timeout()
    o.barrier_idle = 4ms;      // tiny expire, on the fake clock
    o.assume_clean = assume_clean_;
    o.parity = parity_;
    o.start_daemon = false;
    o.clock = &clock_;
    if (bound_) o.device_uuid = device_;
    phase_ = Phase::kCreate;
    where_ = "create";
    std::error_code ec;
    bm_ = Bitmap::create(std::move(storage), o, ec);
    if (!bm_) {
      ADD_FAILURE() << "create failed: " << ec.message();
      return;
    }
    geo_ = bm_->geometry();
    recorded_events_ = bm_->events();
    held_.assign(geo_.chunks(), static_cast<std::uint8_t>(1u << init_state()));
    phase_ = Phase::kRun;
    drain();
    observe();
    note_needs_sync();
    build_hot_spots();
  }

  // A FaultStorage holding `image`, with the hook installed (behind the lying disk in the
  // self-test).
  std::unique_ptr<Storage> make_storage(std::vector<std::byte> image) {
    auto fs = std::make_unique<FaultStorage>(std::move(image));
    st_ = fs.get();
    install_hook(st_);
    if (disk_ == DiskMode::kSkipsFlushes)
      return std::make_unique<SkippingFlushStorage>(std::move(fs));
    return fs;
  }

  void finish() {
    where_ = "finish";
    for (Writer& w : writers_)
      if (w.busy) end_write(w);
    for (std::uint64_t c : std::set<std::uint64_t>(syncing_)) {
      bm_->end_sync(c * geo_.chunk_bytes());
      must_resync_.erase(c);
    }
    syncing_.clear();
    bm_->set_degraded(false);
    pass_timeout();
    clock_.advance(10ms);
    const std::error_code fec = bm_->flush();
    drain();
    observe();
    check_now("after the final flush");
    if (!bm_->failed() && !fec && disk_ == DiskMode::kHonest) {
      // Eventual cleaning: idle and flushed, nothing is left durably Dirty.
      const auto states = test::image_states(st_->durable_image());
      for (std::uint64_t c = 0; c < states.size(); ++c) {
        if (!states[c] || *states[c] == to_byte(ChunkState::kDirty)) {
          violation("after an idle flush chunk " + std::to_string(c) + " is durably " +
                    (states[c] ? "Dirty" : "unverifiable"));
          break;
        }
      }
      if (bm_->counts().dirty != 0) violation("after an idle flush Dirty chunks remain in memory");
    }
    where_ = "close";
    (void)close_idle(*bm_);
    drain();
    st_->set_sync_hook({});
    bm_.reset();
  }

  // Chunks in the first 4 pages, at page and block boundaries, where collisions of
  // writes, persists and daemon passes are most interesting.
  void build_hot_spots() {
    const std::uint64_t pages = std::min<std::uint64_t>(geo_.pages(), 4);
    limit_ = geo_.last_chunk_of_page(pages - 1);
    std::vector<std::uint64_t> cand = {0, limit_};
    for (std::uint64_t p = 0; p < pages; ++p) {
      cand.push_back(geo_.first_chunk_of_page(p));
      cand.push_back(geo_.last_chunk_of_page(p));
    }
    for (int i = 0; i < 4; ++i) {
      const std::uint64_t b = rng_() % geo_.blocks();
      const ChunkRange r = geo_.chunks_in_block(b);
      if (r.empty() || r.first > limit_) continue;
      cand.push_back(r.first);
      cand.push_back(std::min(r.end - 1, limit_));
    }
    std::shuffle(cand.begin(), cand.end(), rng_);
    const std::size_t keep = 5 + rng_() % 4;
    hot_.assign(cand.begin(), cand.begin() + std::min(keep, cand.size()));
    hot_.push_back(rng_() % (limit_ + 1));
  }

  // A range of 1-3 chunks around a hot spot: [first, last].
  std::pair<std::uint64_t, std::uint64_t> pick_chunks() {
    std::uint64_t first = hot_[rng_() % hot_.size()];
    if (rng_() % 3 == 0 && first > 0) first -= 1 + rng_() % std::min<std::uint64_t>(first, 2);
    const std::uint64_t last = std::min(first + rng_() % 3, limit_);
    return {first, last};
  }

  // ---------------------------------------------------------------- operations

  void step() {
    ++totals_.ops;
    where_ = "op " + std::to_string(op_);
    std::vector<Writer*> idle, busy;
    for (Writer& w : writers_) (w.busy ? busy : idle).push_back(&w);
    const unsigned r = rng_() % 100;
    if (bm_->failed() && crash_reopens_ < 2 && r < 30) {
      crash_and_reopen();  // what an engine does after its bitmap failed: restart
    } else if (r < 34 && !idle.empty()) {
      start_write(*idle[rng_() % idle.size()]);
    } else if (r < 58 && !busy.empty()) {
      where_ += " end_write";
      end_write(*busy[rng_() % busy.size()]);
    } else if (r < 74) {
      daemon_pass();
    } else if (r < 80) {
      where_ += " flush";
      pass_timeout();
      (void)bm_->flush();
    } else if (r < 84) {
      discard();
    } else if (r < 92) {
      resync_step();
    } else if (r < 94) {
      where_ += " set_degraded";
      degraded_ = !degraded_;
      bm_->set_degraded(degraded_);
    } else if (r < 97 && crash_reopens_ < 2) {
      crash_and_reopen();
    } else if (may_fail_sync_ && !bm_->failed() && !sync_failure_armed_) {
      where_ += " arm a failing fdatasync";
      st_->fail_sync(1);
      sync_failure_armed_ = true;
      ++totals_.sync_failures;
    } else {
      daemon_pass();
    }
    drain();
    if (!bm_) return;
    observe();
    note_needs_sync();
    check_now("between operations");
    std::vector<std::uint64_t> live_must = must_set();
    for (const std::uint64_t c : syncing_) live_must.push_back(c);
    if (const std::string e = check_views(*bm_, live_must); !e.empty())
      violation("between operations, live bitmap: " + e);
    ++totals_.live_view_checks;
  }

  void start_write(Writer& w) {
    const auto [first, last] = pick_chunks();
    const std::uint64_t cb = geo_.chunk_bytes();
    const std::uint64_t off = first * cb + (rng_() % 2 ? rng_() % (cb / 2) : 0);
    std::uint64_t end = std::min(last * cb + 1 + rng_() % cb, geo_.device_bytes());
    end = std::max(end, off + 1);  // same chunk: end past the start
    where_ += " start_write chunks " + std::to_string(first) + ".." + std::to_string(last);
    const std::error_code ec = bm_->start_write(off, end - off);
    drain();  // the boundaries inside start_write: this write is not issued yet
    if (ec) {
      if (!bm_->failed() && disk_ == DiskMode::kHonest)
        violation("start_write failed on a healthy bitmap: " + ec.message());
      return;  // not issued
    }
    w = Writer{true, off, end - off, first, last};
    for (std::uint64_t c = first; c <= last; ++c) ++issued_[c];
    // S2: the data is issued now; the durable image alone must cover it.
    ++totals_.s2_checks;
    const auto states = test::image_states(st_->durable_image());
    for (std::uint64_t c = first; c <= last; ++c) {
      const bool covered = c < states.size() && states[c] &&
                           (*states[c] == to_byte(ChunkState::kDirty) ||
                            *states[c] == to_byte(ChunkState::kNeedSync) ||
                            *states[c] == to_byte(ChunkState::kSyncing));
      if (!covered)
        violation("S2: start_write returned but chunk " + std::to_string(c) + " is durably " +
                  (c < states.size() && states[c]
                       ? std::string(to_string(static_cast<ChunkState>(*states[c])))
                       : std::string("unverifiable")));
    }
    observe();
    check_now("start_write returned (data issued)");
  }

  void end_write(Writer& w) {
    for (std::uint64_t c = w.first; c <= w.last; ++c)
      if (--issued_[c] == 0) issued_.erase(c);
    w.busy = false;
    bm_->end_write(w.off, w.len);
  }

  void daemon_pass() {
    static constexpr std::chrono::milliseconds kSteps[] = {0ms, 1ms, 3ms, 5ms, 50ms};
    const auto d = kSteps[rng_() % std::size(kSteps)];
    where_ += " daemon pass after +" + std::to_string(d.count()) + "ms";
    clock_.advance(d);
    pass_timeout();
    bm_->run_daemon_once();
  }

  // daemon_sleep is also the suspend timeout of a pass. With a write in flight the pass
  // must give up on its page: 1 ms keeps that cheap. Without one, 10 s: an idle page
  // never times out, however slow the machine. Changing it also rewrites the superblock
  // (lazily), which the crash images then cover.
  void pass_timeout() {
    bool busy = false;
    for (const Writer& w : writers_) busy = busy || w.busy;
    if (busy) ++totals_.writes_in_flight_at_pass;
    const auto want = busy ? 1ms : 10000ms;
    if (bm_->daemon_sleep() != want) {
      ASSERT_FALSE(bm_->set_daemon_sleep(want));
    }
  }

  void discard() {
    const auto [first, last] = pick_chunks();
    for (std::uint64_t c = first; c <= last; ++c)
      if (issued_.count(c) != 0 || syncing_.count(c) != 0) return;  // an engine never overlaps them
    where_ += " discard chunks " + std::to_string(first) + ".." + std::to_string(last);
    const std::uint64_t cb = geo_.chunk_bytes();
    const std::uint64_t len = std::min((last + 1) * cb, geo_.device_bytes()) - first * cb;
    if (bm_->start_discard(first * cb, len)) return;
    bm_->end_discard(first * cb, len);
    // The data is gone: nothing left to resynchronise.
    for (std::uint64_t c = first; c <= last; ++c) must_resync_.erase(c);
  }

  void resync_step() {
    const std::uint64_t cb = geo_.chunk_bytes();
    if (!syncing_.empty() && rng_() % 2 == 0) {
      auto it = syncing_.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(rng_() % syncing_.size()));
      const std::uint64_t c = *it;
      const unsigned r = rng_() % 10;
      if (r < 6) {
        where_ += " end_sync chunk " + std::to_string(c);
        bm_->end_sync(c * cb);
        must_resync_.erase(c);  // the copies agree again
        syncing_.erase(c);
      } else if (r < 9) {
        where_ += " abort_sync chunk " + std::to_string(c);
        bm_->abort_sync(c * cb);
        syncing_.erase(c);
      } else {
        where_ += " close_sync";
        bm_->close_sync();
        for (std::uint64_t s : syncing_) must_resync_.erase(s);
        syncing_.clear();
      }
      return;
    }
    // Start a resync of a chunk that needs one (a crash survivor, or a degraded write).
    std::vector<std::uint64_t> cand(must_resync_.begin(), must_resync_.end());
    for (std::uint64_t h : hot_)
      if (bm_->state(h) == ChunkState::kNeedSync) cand.push_back(h);
    if (cand.empty()) {
      daemon_pass();
      return;
    }
    const std::uint64_t c = cand[rng_() % cand.size()];
    if (syncing_.count(c) != 0) return;
    where_ += " start_sync chunk " + std::to_string(c);
    if (bm_->start_sync(c * cb)) syncing_.insert(c);
  }

  // Power cut now: continue from one of the images the disk could hold, with recovery's
  // own sync boundaries enumerated too.
  void crash_and_reopen() {
    ++crash_reopens_;
    ++totals_.crash_reopens;
    where_ += " crash and reopen";
    const std::vector<std::byte> durable = st_->durable_image();
    const std::vector<PendingWrite> pending = st_->unsynced_writes();
    const auto sels = test::crash_selections(pending, size_.images, rng_);
    const CrashSelection& sel = sels[rng_() % sels.size()];
    std::vector<std::byte> image = test::build_crash_image(durable, pending, sel);
    // Whatever this image resyncs (the writes in flight among them) must stay resynced
    // through a crash during recovery itself, and until the resync ends.
    Moment m;
    m.where = where_;
    const Verdict& v = verdict_of(image, m);
    if (v.ec) {
      violation("the crash image to continue from does not open: " + v.ec.message());
      return;
    }
    for (std::uint64_t c = 0; c < v.states.size(); ++c)
      if (v.states[c] == to_byte(ChunkState::kNeedSync)) must_resync_.insert(c);
    for (const auto& [c, n] : issued_) must_resync_.insert(c);
    // Recovery clears the marker once the resync set is durable.
    stale_durable_ = failing_sync_seen_ = synced_after_failure_ = false;
    for (Writer& w : writers_)
      if (w.busy) end_write(w);
    syncing_.clear();
    st_->set_sync_hook({});
    (void)close_idle(*bm_);
    bm_.reset();  // the old instance goes away; its file does not matter any more
    std::unique_ptr<Storage> storage = make_storage(std::move(image));
    OpenOptions oo;
    oo.start_daemon = false;
    oo.parity = parity_;
    oo.clock = &clock_;
    if (bound_) oo.device_uuid = device_;
    oo.min_events = recorded_events_;  // as an engine that records events() would
    phase_ = Phase::kRecover;
    std::error_code ec;
    bm_ = Bitmap::open(std::move(storage), oo, ec);
    phase_ = Phase::kRun;
    degraded_ = false;
    if (!bm_) {
      violation("reopen after a crash failed: " + ec.message());
      st_ = nullptr;
      return;
    }
    if (bm_->out_of_date())
      violation("a crash image of this very bitmap opened out of date (min_events " +
                std::to_string(oo.min_events) + ")");
    if (bm_->events() <= recorded_events_)
      violation("events did not move past the engine's record at reopen");
    recorded_events_ = bm_->events();
    drain();
    observe();
    note_needs_sync();
  }

  // ---------------------------------------------------------------- state

  const std::uint64_t seed_;
  const RunSize& size_;
  Totals& totals_;
  const DiskMode disk_;
  std::mt19937_64 rng_;
  const Config* cfg_ = nullptr;
  bool assume_clean_ = false, parity_ = false, degraded_ = false, may_fail_sync_ = false,
       sync_failure_armed_ = false, stale_durable_ = false, failing_sync_seen_ = false,
       synced_after_failure_ = false;
  int op_ = 0, crash_reopens_ = 0;
  bool bound_ = false;                 // the bitmap is bound to device_
  DeviceUuid device_{};                // the workload's device uuid
  std::uint64_t recorded_events_ = 0;  // events() after the last create/open, as an engine keeps it
  std::uint64_t violations_ = 0, hook_off_thread_ = 0;
  std::thread::id driver_;
  std::string where_;
  Phase phase_ = Phase::kCreate;

  FakeClock clock_, check_clock_;
  FaultStorage* st_ = nullptr;
  std::unique_ptr<Bitmap> bm_;
  Geometry geo_;
  std::vector<Writer> writers_;
  std::vector<std::uint64_t> hot_;
  std::uint64_t limit_ = 0;

  std::map<std::uint64_t, int> issued_;  // chunk -> writes issued and not ended
  std::set<std::uint64_t> must_resync_;  // a crash may have torn their data
  std::set<std::uint64_t> syncing_;      // start_sync returned true, not ended
  std::vector<std::uint8_t> held_;       // per chunk: bit s set if it held state s
  std::vector<Moment> moments_;
  std::unordered_map<ImageKey, Verdict, ImageKeyHash> cache_;
};

// ------------------------------------------------------------------ tests

TEST(CrashImages, MatchFaultStorageCrashImage) {
  // The images built from a hook's SyncEvent are the ones the storage itself would give.
  std::mt19937_64 rng(7);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::byte> init(8192 + rng() % 8192, std::byte{0x11});
    FaultStorage s(init);
    const int n = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < n; ++i) {
      std::vector<std::byte> d(1 + rng() % 9000, static_cast<std::byte>(0x20 + i));
      ASSERT_FALSE(s.write(rng() % 12000, d));
    }
    const auto pending = s.unsynced_writes();
    const auto durable = s.durable_image();
    CrashImageOptions opt;
    opt.exhaustive_writes = 3;  // exercise the sampling path too
    opt.samples = 8;
    for (const CrashSelection& sel : test::crash_selections(pending, opt, rng))
      ASSERT_EQ(test::build_crash_image(durable, pending, sel), s.crash_image(sel.order, sel.torn))
          << sel.describe();
  }
}

TEST(CrashImages, EnumeratesEverySubsetUpToTheBound) {
  std::vector<PendingWrite> pending;
  for (std::uint64_t i = 0; i < 6; ++i)
    pending.push_back(PendingWrite{i + 1, i * 512, std::vector<std::byte>(512, std::byte{1})});
  std::mt19937_64 rng(1);
  const auto sels = test::crash_selections(pending, CrashImageOptions{}, rng);
  std::set<std::uint64_t> masks;
  for (const auto& s : sels) {
    if (s.torn) continue;
    std::uint64_t m = 0;
    for (std::size_t i : s.order) m |= std::uint64_t{1} << i;
    masks.insert(m);
  }
  EXPECT_EQ(masks.size(), 64u);  // disjoint writes: order does not matter
  // One 4 KiB write spanning 8 sectors gets torn at 512 B.
  pending = {PendingWrite{1, 4096, std::vector<std::byte>(4096, std::byte{2})}};
  std::size_t torn = 0;
  for (const auto& s : test::crash_selections(pending, CrashImageOptions{}, rng))
    torn += s.torn && s.torn->granularity == 512 ? 1 : 0;
  EXPECT_EQ(torn, 4u);
}

TEST(CrashEnum, EveryCrashImageRecoversEveryWriteInFlight) {
  const RunSize size = run_size();
  Totals totals;
  const auto t0 = std::chrono::steady_clock::now();
  std::printf("crash-enum: base seed 0x%" PRIx64 "%s\n", size.base_seed,
              test::crash_exhaustive() ? " (exhaustive)" : "");
  if (size.only) {
    Workload(*size.only, size, totals, DiskMode::kHonest).run();
  } else {
    std::mt19937_64 seeds(size.base_seed);
    for (int i = 0; i < size.workloads && totals.violations == 0; ++i)
      Workload(seeds(), size, totals, DiskMode::kHonest).run();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s, %.1f s\n", totals.summary().c_str(), secs);
  std::fflush(stdout);
  EXPECT_EQ(totals.violations, 0u);
  // Engagement: the run must have reached the states it is meant to check.
  if (!size.only && totals.workloads >= 30) {
    EXPECT_GT(totals.sync_boundaries, 0u);
    EXPECT_GT(totals.bad_block_images, 0u) << "no torn block was ever caught by its checksum";
    EXPECT_GT(totals.refused, 0u) << "no crash during creation was enumerated";
    EXPECT_GT(totals.crash_reopens, 0u);
    EXPECT_GT(totals.writes_in_flight_at_pass, 0u);
    EXPECT_GT(totals.stale_images, 0u) << "no image after an fdatasync failure";
    EXPECT_GT(totals.bound_workloads, 0u);
    EXPECT_GT(totals.foreign_checks, 0u) << "no bound image was opened for another device";
    EXPECT_GT(totals.live_view_checks, 0u);
  }
}

// Regression (found by this file's enumeration on a loaded machine): Bitmap::close()
// suspends every page with a 100 ms timeout and reads a timeout as "a write is still in
// flight" (Errc::busy; ~Bitmap() then aborts). When that timeout also counted the
// kill's RCU grace period and the switch thread's fold, a slow grace period (an
// overloaded machine, or an application's own liburcu reader, which
// docs/design.md#percpuref-semantics allows) made an idle bitmap's close() say busy, and a daemon
// pass or flush() with a small daemon_sleep skip an idle page as if a write had outlived it. The
// timeout must count from the end of the grace period. Here an RCU reader stays in its read-side
// section for 500 ms: a grace period that slow is the condition under test (the closing thread
// cannot signal the reader once it gives up: it is then blocked in resurrect(), waiting
// for that same grace period). Nothing between the test's threads is ordered by time.
TEST(CrashEnumRegression, CloseOfAnIdleBitmapIsNotBusyWhileAGracePeriodIsSlow) {
  BitmapOptions o;
  o.device_bytes = 1ull << 30;
  o.start_daemon = false;
  FakeClock clock;
  o.clock = &clock;
  std::error_code ec;
  auto t = test::make_bitmap(o, ec);
  ASSERT_TRUE(t.bitmap) << ec.message();
  ASSERT_FALSE(t.bitmap->start_write(0, 4096));
  t.bitmap->end_write(0, 4096);  // nothing in flight from here on
  test::Flag entered;
  std::thread reader([&] {
    const auto until = std::chrono::steady_clock::now() + 500ms;
    urcu_bp_read_lock();
    entered.set();
    while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
    urcu_bp_read_unlock();
  });
  entered.wait();
  const std::error_code cec = t.bitmap->close();
  reader.join();
  EXPECT_NE(cec, Errc::busy) << "close() of a bitmap with no write in flight reported busy";
  if (cec == Errc::busy) {
    EXPECT_FALSE(close_idle(*t.bitmap));  // keep ~Bitmap from aborting
  }
}

TEST(CrashEnum, CheckerCatchesADiskThatSkipsFlushes) {
  // Self-test: the same workloads over a disk that acknowledges every other flush without
  // doing it. start_write then returns with Dirty not durable, and crash images lose it:
  // the checker must say so.
  RunSize size = run_size();
  Totals totals;
  std::mt19937_64 seeds(size.base_seed ^ 0x5eed);
  for (int i = 0; i < 5 && totals.violations == 0; ++i)
    Workload(seeds(), size, totals, DiskMode::kSkipsFlushes).run();
  std::printf("self-test over a disk that skips flushes: %" PRIu64 " violations found\n",
              totals.violations);
  EXPECT_GT(totals.violations, 0u) << "the checker missed a disk that lies about flushes";
}

}  // namespace
}  // namespace llbitmap

int main(int argc, char** argv) {
  return llbitmap::test::crash_test_main(argc, argv);
}
