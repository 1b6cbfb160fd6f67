// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Differential test (docs/testing.md#differential-test): proves that the lockless Bitmap computes
// exactly what a plain mutex-and-vector bitmap computes, on thousands of random operation
// sequences: the same chunk states in memory after every operation (those of the pages
// it touched; every chunk after every daemon pass, flush, close_sync and reopen, every
// 8th operation and at the end), the same states durable on the medium after every
// sync, the same needs_sync() runs and counts(), the same results, the same number of
// syncs and of cleaned pages and suspend timeouts. Semantic drift in the fast path (percpu
// barriers, the lock-free already-Dirty path, group commit, the batched daemon pass) shows up as a
// difference here, with the seed and the operations that led to it.
//
// The reference model (RefBitmap below) is written from the contract, not from the
// implementation: one std::mutex, a vector of states, the kernel table of chunk_state.h
// applied per chunk, per page an in-flight count and an expire time, and persistence as
// documented in bitmap.h:
//   - a persist round makes the whole in-memory image durable (group commit: one round
//     writes every block changed so far, and syncs once);
//   - start_write runs one before it returns if a block its range touches has changes
//     not yet durable (so every changed state is durable at start_write return, and a
//     write to chunks that are already durably Dirty does no IO), except when every chunk
//     of the range is durably dirty-like (Dirty, NeedSync, Syncing): then it is covered,
//     whatever else of its blocks is pending;
//   - a daemon pass cleans (Dirty -> Clean) the pages that hold a Dirty chunk, have
//     expired (no raise for barrier_idle; never after a pass resumed them; at once after
//     end_sync or close_sync) and have no write or discard in flight, then runs one
//     round if it cleaned any; nothing while degraded;
//   - flush is a pass over every page with a Dirty chunk, expired or not, then a round
//     if anything is still not durable;
//   - discard, start_sync, end_sync, abort_sync and close_sync change memory only.
//   - close cleans everything (not degraded) and makes it durable; open applies Reload.
//
// Single-threaded, so the order is the operation order. A daemon pass that meets a
// write in flight waits for daemon_sleep before it gives the page up; the driver sets
// daemon_sleep to 1 ms for those passes and to 10 s otherwise (a change the model knows:
// it rewrites the superblock's block). The timeout counts from the end of the kill's
// grace period, so an idle page is never given up, however slow the machine.
//
// LLBM_DIFF_SCALE scales the number of sequences; LLBM_DIFF_SEED=<seed> replays one.
#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/clock.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/testing/fault_storage.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bitmap_fixture.h"
#include "image_states.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LLBM_DIFF_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LLBM_DIFF_SANITIZED 1
#endif
#endif

namespace llbitmap {
namespace {

using namespace std::chrono_literals;

// ------------------------------------------------------------------ reference model

class RefBitmap {
 public:
  struct Config {
    std::uint64_t device, chunk, space;
    std::uint32_t block;
    std::chrono::milliseconds idle;
    bool assume_clean, parity;
  };

  explicit RefBitmap(const Config& cfg)
      : cfg_(cfg),
        chunks_((cfg.device + cfg.chunk - 1) / cfg.chunk),
        pages_((chunks_ + kDataOffset + kPageBytes - 1) / kPageBytes),
        mem_(chunks_,
             cfg.assume_clean ? to_byte(ChunkState::kClean) : to_byte(ChunkState::kUnwritten)),
        durable_(mem_),
        pending_(cfg.space / cfg.block, false),
        inflight_(pages_, 0),
        expire_(pages_, kNever) {}

  std::uint64_t chunks() const { return chunks_; }
  std::uint64_t pages() const { return pages_; }
  std::uint64_t page_of(std::uint64_t c) const { return (c + kDataOffset) / kPageBytes; }
  std::uint64_t block_of(std::uint64_t c) const { return (c + kDataOffset) / cfg_.block; }

  // start_write; returns the error and whether a round ran.
  std::error_code start_write(std::uint64_t off, std::uint64_t len, std::int64_t now) {
    std::lock_guard lk(mu_);
    if (!valid(off, len)) return std::make_error_code(std::errc::invalid_argument);
    const std::uint64_t first = off / cfg_.chunk, last = (off + len - 1) / cfg_.chunk;
    raise(first, last, now);
    bool need_round = false, covered = true;
    for (std::uint64_t c = first; c <= last; ++c) {
      apply(c, Action::kStartwrite);
      need_round = need_round || pending_[block_of(c)];
      covered = covered && is_dirty_like(static_cast<ChunkState>(mem_[c])) &&
                is_dirty_like(static_cast<ChunkState>(durable_[c]));
    }
    // Every chunk durably dirty-like: covered, whatever else of their blocks is pending.
    if (covered) need_round = false;
    if (need_round) round();
    return {};
  }
  void end_write(std::uint64_t off, std::uint64_t len) {
    std::lock_guard lk(mu_);
    release(off / cfg_.chunk, (off + len - 1) / cfg_.chunk);
  }

  // Discard covers whole chunks only (the device's last chunk when it reaches the end).
  std::optional<std::pair<std::uint64_t, std::uint64_t>> discard_range(std::uint64_t off,
                                                                       std::uint64_t len) const {
    const std::uint64_t first = (off + cfg_.chunk - 1) / cfg_.chunk;
    const std::uint64_t end = off + len == cfg_.device ? chunks_ : (off + len) / cfg_.chunk;
    if (first >= end) return std::nullopt;
    return std::make_pair(first, end - 1);
  }
  std::error_code start_discard(std::uint64_t off, std::uint64_t len, std::int64_t now) {
    std::lock_guard lk(mu_);
    if (!valid(off, len)) return std::make_error_code(std::errc::invalid_argument);
    const auto r = discard_range(off, len);
    if (!r) return {};
    raise(r->first, r->second, now);
    for (std::uint64_t c = r->first; c <= r->second; ++c) apply(c, Action::kDiscard);
    return {};
  }
  void end_discard(std::uint64_t off, std::uint64_t len) {
    std::lock_guard lk(mu_);
    if (const auto r = discard_range(off, len)) release(r->first, r->second);
  }

  bool start_sync(std::uint64_t off) {
    std::lock_guard lk(mu_);
    const std::uint64_t c = off / cfg_.chunk;
    apply(c, Action::kStartsync);
    return mem_[c] == to_byte(ChunkState::kSyncing);
  }
  void end_sync(std::uint64_t off) {
    std::lock_guard lk(mu_);
    const std::uint64_t c = off / cfg_.chunk;
    if (apply(c, Action::kEndsync)) expire_[page_of(c)] = kExpired;
  }
  void abort_sync(std::uint64_t off) {
    std::lock_guard lk(mu_);
    apply(off / cfg_.chunk, Action::kAbortsync);
  }
  void close_sync() {
    std::lock_guard lk(mu_);
    for (std::uint64_t c = 0; c < chunks_; ++c) apply(c, Action::kEndsync);
    std::fill(expire_.begin(), expire_.end(), kExpired);
  }
  void set_degraded(bool d) {
    std::lock_guard lk(mu_);
    degraded_ = d;
  }
  // The superblock changed (a runtime knob): its block must be written again.
  void superblock_changed() {
    std::lock_guard lk(mu_);
    pending_[0] = true;
  }

  // The pages a daemon pass (or flush) would try to clean now.
  std::vector<std::uint64_t> candidates(bool force, std::int64_t now) const {
    std::lock_guard lk(mu_);
    std::vector<std::uint64_t> out;
    if (degraded_) return out;
    for (std::uint64_t p = 0; p < pages_; ++p)
      if (page_has_dirty(p) && (force || now >= expire_[p])) out.push_back(p);
    return out;
  }
  std::uint64_t inflight(std::uint64_t p) const {
    std::lock_guard lk(mu_);
    return inflight_[p];
  }
  // The pass's outcome: `cleaned` are the candidates that were suspended; the others
  // timed out and stay as they are.
  void daemon_pass(const std::vector<std::uint64_t>& cleaned) {
    std::lock_guard lk(mu_);
    if (cleaned.empty()) return;
    for (std::uint64_t p : cleaned) {
      for (std::uint64_t c = first_chunk(p); c <= last_chunk(p); ++c) apply(c, Action::kDaemon);
      expire_[p] = kNever;  // resumed
    }
    round();
  }
  // flush's final persist_all.
  void persist_all() {
    std::lock_guard lk(mu_);
    if (std::any_of(pending_.begin(), pending_.end(), [](bool b) { return b; })) round();
  }
  // close() with nothing in flight: clean everything (unless degraded), write it all.
  void close() {
    std::lock_guard lk(mu_);
    if (!degraded_)
      for (std::uint64_t c = 0; c < chunks_; ++c) apply(c, Action::kDaemon);
    round();
  }
  // open() of `durable`: Reload, everything written, fresh pages, not degraded.
  void reopen_from(const std::vector<std::uint8_t>& durable) {
    std::lock_guard lk(mu_);
    mem_ = durable;
    for (auto& b : mem_) {
      const Transition t = apply_action(b, Action::kReload, {});
      if (t.changed()) b = to_byte(t.next);
    }
    durable_ = mem_;
    std::fill(pending_.begin(), pending_.end(), false);
    std::fill(inflight_.begin(), inflight_.end(), 0);
    std::fill(expire_.begin(), expire_.end(), kNever);
    degraded_ = false;
  }

  std::vector<std::pair<std::uint64_t, std::uint64_t>> needs_sync() const {
    std::lock_guard lk(mu_);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
    for (std::uint64_t c = 0; c < chunks_; ++c) {
      if (!llbitmap::needs_sync(static_cast<ChunkState>(mem_[c]))) continue;
      const std::uint64_t off = c * cfg_.chunk;
      const std::uint64_t len = std::min(cfg_.chunk, cfg_.device - off);
      if (!runs.empty() && runs.back().first + runs.back().second == off)
        runs.back().second += len;
      else
        runs.emplace_back(off, len);
    }
    return runs;
  }

  // Persist rounds (syncs of the file) run so far.
  std::uint64_t rounds() const {
    std::lock_guard lk(mu_);
    return rounds_;
  }
  std::uint8_t memory_at(std::uint64_t c) const {
    std::lock_guard lk(mu_);
    return mem_[c];
  }
  std::vector<std::uint8_t> memory() const {
    std::lock_guard lk(mu_);
    return mem_;
  }
  std::vector<std::uint8_t> durable() const {
    std::lock_guard lk(mu_);
    return durable_;
  }
  std::uint64_t first_chunk(std::uint64_t p) const {
    return p == 0 ? 0 : p * kPageBytes - kDataOffset;
  }
  std::uint64_t last_chunk(std::uint64_t p) const {
    return std::min(chunks_, (p + 1) * kPageBytes - kDataOffset) - 1;
  }

 private:
  static constexpr std::int64_t kNever = INT64_MAX;
  static constexpr std::int64_t kExpired = INT64_MIN;

  bool valid(std::uint64_t off, std::uint64_t len) const {
    return len != 0 && off < cfg_.device && len <= cfg_.device - off;
  }
  void raise(std::uint64_t first, std::uint64_t last, std::int64_t now) {
    for (std::uint64_t p = page_of(first); p <= page_of(last); ++p) {
      ++inflight_[p];
      expire_[p] = now + std::chrono::nanoseconds(cfg_.idle).count();
    }
  }
  void release(std::uint64_t first, std::uint64_t last) {
    for (std::uint64_t p = page_of(first); p <= page_of(last); ++p) --inflight_[p];
  }
  // Applies one action to one chunk; true if its state changed.
  bool apply(std::uint64_t c, Action a) {
    const Transition t =
        apply_action(mem_[c], a, TransitionContext{.degraded = degraded_, .parity = cfg_.parity});
    if (!t.changed() || to_byte(t.next) == mem_[c]) return false;
    mem_[c] = to_byte(t.next);
    pending_[block_of(c)] = true;
    return true;
  }
  void round() {
    durable_ = mem_;
    std::fill(pending_.begin(), pending_.end(), false);
    ++rounds_;
  }
  bool page_has_dirty(std::uint64_t p) const {
    for (std::uint64_t c = first_chunk(p); c <= last_chunk(p); ++c)
      if (mem_[c] == to_byte(ChunkState::kDirty)) return true;
    return false;
  }

  mutable std::mutex mu_;
  const Config cfg_;
  const std::uint64_t chunks_, pages_;
  std::vector<std::uint8_t> mem_, durable_;
  std::vector<bool> pending_;  // per block: changed since the last round
  std::vector<std::uint64_t> inflight_;
  std::vector<std::int64_t> expire_;
  bool degraded_ = false;
  std::uint64_t rounds_ = 0;
};

// ------------------------------------------------------------------ driver

struct DiffTotals {
  std::uint64_t sequences = 0, ops = 0, passes = 0, pages_cleaned = 0, rounds = 0, timeouts = 0,
                reopens = 0, invalid = 0;
};

constexpr RefBitmap::Config kDiffConfigs[] = {
    // 48 MiB + 1000 B: a partial last chunk; 512 B blocks; 4 pages.
    {(48ull << 20) + 1000, 4 << 10, 16 << 10, 512, 4ms, false, false},
    {1ull << 30, 64 << 10, 128 << 10, 4096, 4ms, false, false},  // 5 pages
    {100ull << 20, 4 << 10, 32 << 10, 2048, 4ms, false, false},  // 7 pages
};

class Sequence {
 public:
  Sequence(std::uint64_t seed, DiffTotals& totals) : seed_(seed), rng_(seed), totals_(totals) {}

  // Runs the whole sequence; false at the first difference (reported with ADD_FAILURE).
  bool run(int ops) {
    RefBitmap::Config cfg = kDiffConfigs[rng_() % std::size(kDiffConfigs)];
    cfg.assume_clean = rng_() % 5 == 0;
    cfg.parity = rng_() % 6 == 0;
    cfg_ = cfg;
    writers_.resize(1 + rng_() % 3);
    model_ = std::make_unique<RefBitmap>(cfg);
    BitmapOptions o;
    o.device_bytes = cfg.device;
    o.chunk_bytes = cfg.chunk;
    o.space_bytes = cfg.space;
    o.block_bytes = cfg.block;
    o.daemon_sleep = 10000ms;
    o.barrier_idle = cfg.idle;
    o.assume_clean = cfg.assume_clean;
    o.parity = cfg.parity;
    o.start_daemon = false;
    o.clock = &clock_;
    std::error_code ec;
    auto t = test::make_bitmap(o, ec);
    if (!t.bitmap) {
      ADD_FAILURE() << "create failed: " << ec.message();
      return false;
    }
    bm_ = std::move(t.bitmap);
    st_ = t.storage;
    rebase();
    log("create " + describe(cfg));
    bool ok = compare("after create", true);
    for (int i = 0; i < ops && ok; ++i) ok = step(i);
    if (ok) ok = finish();
    if (bm_) {
      for (auto& w : writers_)
        if (w.busy) end(w);
      (void)close_idle();
      bm_.reset();
    }
    ++totals_.sequences;
    return ok;
  }

 private:
  struct Writer {
    bool busy = false, discard = false;
    std::uint64_t off = 0, len = 0;
  };

  static std::string describe(const RefBitmap::Config& c) {
    std::ostringstream s;
    s << c.device << " B device, " << c.chunk << " B chunks, " << c.space << " B space, " << c.block
      << " B blocks" << (c.assume_clean ? ", assume_clean" : "") << (c.parity ? ", parity" : "");
    return s.str();
  }

  void log(std::string s) {
    log_.push_back(std::move(s));
    if (log_.size() > 40) log_.pop_front();
  }

  std::int64_t now() { return clock_.now().time_since_epoch().count(); }

  bool fail(const std::string& what) {
    std::string ops;
    for (const auto& l : log_) ops += "\n    " + l;
    ADD_FAILURE() << "differential mismatch, seed 0x" << std::hex << seed_ << std::dec << ": "
                  << what << "\n  last operations:" << ops << "\n  replay: LLBM_DIFF_SEED=0x"
                  << std::hex << seed_;
    return false;
  }

  static std::string name(std::uint8_t s) {
    return std::string(to_string(static_cast<ChunkState>(s)));
  }

  // The pages an operation touched: their chunks are compared after it. Operations
  // that may touch any page (passes, flush, close_sync, reopen) ask for a full compare,
  // which also runs every 8th operation and at the end (a full compare of 16 Ki
  // chunks after every operation would make Debug and sanitizer builds crawl).
  void touch(std::uint64_t off, std::uint64_t len) {
    if (len == 0 || off >= cfg_.device || len > cfg_.device - off) return;
    for (std::uint64_t p = model_->page_of(off / cfg_.chunk);
         p <= model_->page_of((off + len - 1) / cfg_.chunk); ++p)
      window_.push_back(p);
  }

  // Everything observable must agree.
  bool compare(const std::string& when, bool full = false) {
    full = full || full_ || ++since_full_ >= 8;
    const auto mem = model_->memory();
    auto check_chunk = [&](std::uint64_t c) {
      const std::uint8_t real = to_byte(bm_->state(c));
      if (real == mem[c]) return true;
      return fail(when + ": chunk " + std::to_string(c) + " is " + name(real) +
                  " in memory, the model says " + name(mem[c]));
    };
    if (full) {
      since_full_ = 0;
      for (std::uint64_t c = 0; c < mem.size(); ++c)
        if (!check_chunk(c)) return false;
    } else {
      for (std::uint64_t p : window_)
        for (std::uint64_t c = model_->first_chunk(p); c <= model_->last_chunk(p); ++c)
          if (!check_chunk(c)) return false;
    }
    window_.clear();
    full_ = false;
    const std::uint64_t syncs = st_->counters().syncs - syncs_base_;
    const std::uint64_t rounds = model_->rounds() - rounds_base_;
    if (syncs != rounds)
      return fail(when + ": " + std::to_string(syncs) + " syncs, the model expects " +
                  std::to_string(rounds) + " persist rounds");
    // The medium changes only at a sync, the model's durable states only at a round:
    // with equal counts, compare them when there was one.
    if (syncs != compared_syncs_) {
      compared_syncs_ = syncs;
      const auto want = model_->durable();
      const auto got = test::image_states(st_->durable_image());
      if (got.size() != want.size()) return fail(when + ": the durable image does not decode");
      for (std::uint64_t c = 0; c < want.size(); ++c) {
        if (!got[c])
          return fail(when + ": chunk " + std::to_string(c) +
                      "'s durable block fails its checksum");
        if (*got[c] != want[c])
          return fail(when + ": chunk " + std::to_string(c) + " is durably " + name(*got[c]) +
                      ", the model says " + name(want[c]));
      }
    }
    if (full) {
      if (bm_->needs_sync() != model_->needs_sync())
        return fail(when + ": needs_sync() runs differ");
      const StateCounts n = bm_->counts();
      std::uint64_t cnt[kChunkStateCount] = {};
      for (std::uint8_t s : mem) ++cnt[s];
      if (n.unwritten != cnt[0] || n.clean != cnt[1] || n.dirty != cnt[2] ||
          n.need_sync != cnt[3] || n.syncing != cnt[4])
        return fail(when + ": counts() differ");
    }
    if (bm_->stats().pages_cleaned != cleaned_)
      return fail(when + ": pages_cleaned " + std::to_string(bm_->stats().pages_cleaned) +
                  ", the model says " + std::to_string(cleaned_));
    return true;
  }

  // A range around the page and block boundaries of the first 4 pages; sometimes
  // longer, sometimes reaching the device's end, sometimes invalid.
  std::pair<std::uint64_t, std::uint64_t> pick_range() {
    const std::uint64_t cb = cfg_.chunk, dev = cfg_.device;
    const unsigned r = rng_() % 100;
    if (r < 2) return {rng_() % dev, 0};                      // empty: invalid
    if (r < 4) return {dev - rng_() % cb, cb + rng_() % cb};  // past the end: invalid
    if (r < 8) {                                              // up to the device's end
      const std::uint64_t off = dev - 1 - rng_() % (3 * cb);
      return {off, dev - off};
    }
    const std::uint64_t limit = std::min(
        model_->last_chunk(std::min<std::uint64_t>(model_->pages(), 4) - 1), model_->chunks() - 1);
    std::uint64_t c;
    switch (rng_() % 4) {
      case 0:
        c = model_->first_chunk(1 + rng_() % std::min<std::uint64_t>(3, model_->pages() - 1));
        break;
      case 1:
        c = (rng_() % (limit / (cfg_.block) + 1)) * cfg_.block;
        break;  // a block start
      default:
        c = rng_() % (limit + 1);
        break;
    }
    if (c > 0 && rng_() % 2) c -= 1 + rng_() % std::min<std::uint64_t>(c, 2);
    c = std::min(c, limit);
    const std::uint64_t n = r < 14 ? 1 + rng_() % 5000 : 1 + rng_() % 3;  // chunks
    const std::uint64_t off = c * cb + (rng_() % 3 == 0 ? rng_() % cb : 0);
    std::uint64_t end = std::min(dev, (c + n - 1) * cb + 1 + rng_() % cb);
    if (end <= off) end = std::min(dev, off + 1);
    return {off, end - off};
  }

  bool step(int i) {
    ++totals_.ops;
    std::vector<Writer*> idle, busy;
    for (Writer& w : writers_) (w.busy ? busy : idle).push_back(&w);
    const std::uint64_t cb = cfg_.chunk;
    const unsigned r = rng_() % 100;
    const std::string at = "op " + std::to_string(i) + ": ";
    if (r < 30 && !idle.empty()) {
      Writer& w = *idle[rng_() % idle.size()];
      const auto [off, len] = pick_range();
      touch(off, len);
      const std::error_code want = model_->start_write(off, len, now());
      const std::error_code got = bm_->start_write(off, len);
      log(at + "start_write(" + std::to_string(off) + ", " + std::to_string(len) + ") -> " +
          got.message());
      if (got != want)
        return fail(at + "start_write returned '" + got.message() + "', the model '" +
                    want.message() + "'");
      if (!got) {
        w = Writer{true, false, off, len};
      } else {
        ++totals_.invalid;
      }
    } else if (r < 52 && !busy.empty()) {
      Writer& w = *busy[rng_() % busy.size()];
      log(at + (w.discard ? "end_discard(" : "end_write(") + std::to_string(w.off) + ", " +
          std::to_string(w.len) + ")");
      end(w);
    } else if (r < 58 && !idle.empty()) {
      Writer& w = *idle[rng_() % idle.size()];
      const auto [off, len] = pick_range();
      touch(off, len);
      const std::error_code want = model_->start_discard(off, len, now());
      const std::error_code got = bm_->start_discard(off, len);
      log(at + "start_discard(" + std::to_string(off) + ", " + std::to_string(len) + ") -> " +
          got.message());
      if (got != want)
        return fail(at + "start_discard returned '" + got.message() + "', the model '" +
                    want.message() + "'");
      if (!got) {
        if (rng_() % 2) {
          w = Writer{true, true, off, len};
        } else {
          bm_->end_discard(off, len);
          model_->end_discard(off, len);
        }
      } else {
        ++totals_.invalid;
      }
    } else if (r < 72) {
      static constexpr std::chrono::milliseconds kSteps[] = {0ms, 1ms, 3ms, 4ms, 5ms, 50ms};
      const auto d = kSteps[rng_() % std::size(kSteps)];
      clock_.advance(d);
      log(at + "advance " + std::to_string(d.count()) + " ms, run_daemon_once");
      full_ = true;
      if (!pass(false)) return false;
    } else if (r < 77) {
      log(at + "flush");
      full_ = true;
      if (!pass(true)) return false;
    } else if (r < 90) {
      const std::uint64_t off = pick_sync_offset();
      touch(off, 1);
      switch (rng_() % 5) {
        case 0:
        case 1: {
          const bool want = model_->start_sync(off);
          const bool got = bm_->start_sync(off);
          log(at + "start_sync(" + std::to_string(off) + ") -> " + (got ? "true" : "false"));
          if (got != want) return fail(at + "start_sync returned " + (got ? "true" : "false"));
          break;
        }
        case 2:
          log(at + "end_sync(" + std::to_string(off) + ")");
          model_->end_sync(off);
          bm_->end_sync(off);
          break;
        case 3:
          log(at + "abort_sync(" + std::to_string(off) + ")");
          model_->abort_sync(off);
          bm_->abort_sync(off);
          break;
        default:
          log(at + "close_sync");
          full_ = true;
          model_->close_sync();
          bm_->close_sync();
          break;
      }
    } else if (r < 94) {
      degraded_ = !degraded_;
      log(at + "set_degraded(" + (degraded_ ? "true" : "false") + ")");
      model_->set_degraded(degraded_);
      bm_->set_degraded(degraded_);
    } else if (r < 96) {
      log(at + "advance 1 s");
      clock_.advance(1s);
    } else if (r < 98) {
      full_ = true;
      if (!reopen(rng_() % 2 == 0, at)) return false;
    } else {
      // Already durable: no IO, same states.
      const std::uint64_t c = rng_() % model_->chunks();
      log(at + "start_write+end_write of chunk " + std::to_string(c));
      touch(c * cb, 1);
      const std::error_code want = model_->start_write(c * cb, 1, now());
      if (bm_->start_write(c * cb, 1) != want) return fail(at + "start_write of one chunk differs");
      bm_->end_write(c * cb, 1);
      model_->end_write(c * cb, 1);
    }
    return compare(at + log_.back());
  }

  // New bitmap instance: its counters start again.
  void rebase() {
    syncs_base_ = st_->counters().syncs;
    rounds_base_ = model_->rounds();
    compared_syncs_ = ~std::uint64_t{0};  // compare the medium at the next check
    cleaned_ = 0;
  }

  std::uint64_t pick_sync_offset() {
    // Mostly chunks that need a resync or are being resynced.
    const auto runs = model_->needs_sync();
    if (!runs.empty() && rng_() % 3 != 0) {
      const auto& run = runs[rng_() % runs.size()];
      return run.first + (rng_() % run.second) / cfg_.chunk * cfg_.chunk;
    }
    return (rng_() % model_->chunks()) * cfg_.chunk;
  }

  void end(Writer& w) {
    w.busy = false;
    if (w.discard) {
      bm_->end_discard(w.off, w.len);
      model_->end_discard(w.off, w.len);
    } else {
      bm_->end_write(w.off, w.len);
      model_->end_write(w.off, w.len);
    }
  }

  // A daemon pass (force: flush). Sets daemon_sleep for it (see the top of the file).
  bool pass(bool force) {
    ++totals_.passes;
    const auto cand = model_->candidates(force, now());
    bool busy_page = false;
    for (std::uint64_t p : cand) busy_page = busy_page || model_->inflight(p) > 0;
    const auto want_sleep = busy_page ? 1ms : 10000ms;
    if (bm_->daemon_sleep() != want_sleep) {
      if (bm_->set_daemon_sleep(want_sleep)) return fail("set_daemon_sleep failed");
      model_->superblock_changed();
    }
    const BitmapStats before = bm_->stats();
    const std::error_code ec = force ? bm_->flush() : (bm_->run_daemon_once(), std::error_code{});
    if (ec)
      return fail(std::string(force ? "flush" : "run_daemon_once") + " failed: " + ec.message());
    const BitmapStats after = bm_->stats();
    // Which candidates the library suspended and cleaned: those whose Dirty chunks are
    // now Clean. A candidate with a write in flight must never be among them.
    std::vector<std::uint64_t> cleaned;
    for (std::uint64_t p : cand) {
      bool was_cleaned = true;
      for (std::uint64_t c = model_->first_chunk(p); c <= model_->last_chunk(p) && was_cleaned; ++c)
        if (model_->memory_at(c) == to_byte(ChunkState::kDirty) &&
            bm_->state(c) == ChunkState::kDirty)
          was_cleaned = false;
      const bool expected = model_->inflight(p) == 0;
      if (was_cleaned && !expected)
        return fail("page " + std::to_string(p) + " was cleaned with a write in flight");
      if (!was_cleaned && expected)
        return fail("page " + std::to_string(p) + " had no write in flight, yet was not cleaned");
      if (!was_cleaned) ++totals_.timeouts;
      if (was_cleaned) cleaned.push_back(p);
    }
    if (after.suspend_timeouts - before.suspend_timeouts != cand.size() - cleaned.size())
      return fail("suspend_timeouts " +
                  std::to_string(after.suspend_timeouts - before.suspend_timeouts) +
                  ", the model expects " + std::to_string(cand.size() - cleaned.size()));
    model_->daemon_pass(cleaned);
    if (force) model_->persist_all();
    cleaned_ += cleaned.size();
    totals_.pages_cleaned += cleaned.size();
    return true;
  }

  std::error_code close_idle() {
    std::error_code ec;
    for (int i = 0; i < 50; ++i)
      if ((ec = bm_->close()) != Errc::busy) break;
    return ec;
  }

  // Close and reopen (clean), or reopen what the medium holds now (crash).
  bool reopen(bool crash, const std::string& at) {
    ++totals_.reopens;
    log(at + (crash ? "crash and reopen" : "close and reopen"));
    std::vector<std::byte> file;
    if (crash) file = st_->durable_image();
    for (auto& w : writers_)
      if (w.busy) end(w);
    if (!crash) {
      model_->close();
      if (const std::error_code ec = close_idle())
        return fail(at + "close failed: " + ec.message());
      file = st_->durable_image();
      // close() writes everything, superblock included: compare what it left.
      const auto got = test::image_states(file);
      const auto want = model_->durable();
      for (std::uint64_t c = 0; c < want.size(); ++c)
        if (c >= got.size() || !got[c] || *got[c] != want[c])
          return fail(at + "after close chunk " + std::to_string(c) + " differs on the medium");
    }
    (void)close_idle();
    bm_.reset();
    const auto states = test::image_states(file);
    std::vector<std::uint8_t> durable(states.size());
    for (std::size_t c = 0; c < states.size(); ++c) {
      if (!states[c]) return fail(at + "the durable image has a bad block");
      durable[c] = *states[c];
    }
    model_->reopen_from(durable);
    degraded_ = false;
    std::error_code ec;
    FaultStorage* fs = nullptr;
    OpenOptions oo;
    oo.start_daemon = false;
    oo.parity = cfg_.parity;
    oo.clock = &clock_;
    auto storage = std::make_unique<FaultStorage>(std::move(file));
    fs = storage.get();
    bm_ = Bitmap::open(std::move(storage), oo, ec);
    if (!bm_) return fail(at + "reopen failed: " + ec.message());
    st_ = fs;
    rebase();
    return true;
  }

  bool finish() {
    log("finish: end everything, leave degraded, flush");
    for (auto& w : writers_)
      if (w.busy) end(w);
    degraded_ = false;
    model_->set_degraded(false);
    bm_->set_degraded(false);
    if (!pass(true)) return false;
    if (!compare("after the final flush", true)) return false;
    // The fast decoder used above agrees with the fixture's reference decoder.
    if (seed_ % 16 == 0) {
      const auto file = st_->durable_image();
      const auto fast = test::image_states(file);
      const auto ref = test::stored_states(file);
      if (fast != ref) return fail("image_states and stored_states disagree on the medium");
    }
    if (bm_->counts().dirty != 0) return fail("Dirty chunks remain after an idle flush");
    return true;
  }

  const std::uint64_t seed_;
  std::mt19937_64 rng_;
  DiffTotals& totals_;
  RefBitmap::Config cfg_{};
  FakeClock clock_;
  std::unique_ptr<RefBitmap> model_;
  std::unique_ptr<Bitmap> bm_;
  FaultStorage* st_ = nullptr;
  std::vector<Writer> writers_;
  bool degraded_ = false, full_ = false;
  int since_full_ = 0;
  std::vector<std::uint64_t> window_;
  std::uint64_t syncs_base_ = 0, rounds_base_ = 0, compared_syncs_ = 0, cleaned_ = 0;
  std::deque<std::string> log_;
};

int sequences_to_run() {
#if defined(LLBM_DIFF_SANITIZED)
  int n = 100;
#elif !defined(NDEBUG)
  int n = 300;
#else
  int n = 2000;
#endif
  if (const char* e = std::getenv("LLBM_DIFF_SCALE"); e != nullptr) {
    const double f = std::strtod(e, nullptr);
    if (f > 0) n = std::max(1, static_cast<int>(n * f));
  }
  return n;
}

TEST(Differential, LocklessBitmapMatchesTheMutexModel) {
  DiffTotals totals;
  const auto t0 = std::chrono::steady_clock::now();
  if (const char* e = std::getenv("LLBM_DIFF_SEED"); e != nullptr) {
    const std::uint64_t seed = std::strtoull(e, nullptr, 0);
    Sequence(seed, totals).run(20 + static_cast<int>(seed % 60));
  } else {
    std::mt19937_64 seeds(0x646966665f6c6c62ULL);
    const int n = sequences_to_run();
    for (int i = 0; i < n; ++i) {
      const std::uint64_t seed = seeds();
      if (!Sequence(seed, totals).run(20 + static_cast<int>(seed % 60))) break;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("differential: sequences %" PRIu64 ", ops %" PRIu64 ", daemon passes %" PRIu64
              ", pages cleaned %" PRIu64 ", suspend timeouts (write in flight) %" PRIu64
              ", reopens %" PRIu64 ", invalid ranges %" PRIu64 ", %.1f s\n",
              totals.sequences, totals.ops, totals.passes, totals.pages_cleaned, totals.timeouts,
              totals.reopens, totals.invalid, secs);
}

}  // namespace
}  // namespace llbitmap
