// SPDX-License-Identifier: LGPL-2.1-or-later
//
// llbitmap_reactor_torture: a randomised run of the reactor driver (include/llbitmap/
// reactor.h) under real threads (docs/testing.md#reactor-driver). Several reactor
// threads, each owning a ReactorQueue, start random writes and discards on chunk
// groups of their own (pages are shared), end them, and poll their queue. One IO thread
// plays the engine's metadata side through a MetaEngine (tests/support/meta_engine.h):
// it completes the outstanding requests in random order, leaves them outstanding for a
// while (delays as explicit skipped rounds), steps the cleaning pass with a fake clock
// that jumps by random amounts, asks for flushes, and with --faults fails a block write
// or a sync now and then. An epoch ends after a failure or every few seconds: the
// reactors end their writes and drop their queues, the IO thread closes the bitmap
// (a busy close is retried), checks it, and reopens the durable image for the next one.
//
// Oracles (the reactor crash enumeration's, under threads):
//   S1  after every metadata completion, the durable image and the image with every
//       unsynced write landed (every 16th completion: every crash image of
//       crash_images.h) reopen (Bitmap::open) with every chunk Dirty-like that has an
//       admitted write not ended, or with data_flush a write ended and not yet covered
//       by a successful data flush;
//   write-ahead: at every admission (kReady or admitting callback), on the reactor
//       thread, the durable image holds the range Dirty or NeedSync in a verifying block;
//   S5  a failed bitmap's durable superblock is stale; a clean close leaves no chunk
//       durably Dirty; the engine saw no request out of the header's order;
//   liveness: an epoch's quiesce or close that does not finish within 10 s of progress
//       fails the run.
// Engagement counters (admissions after kPending, pages cleaned, data flushes, epochs,
// failures with --faults) fail a run that never reached them.
//
// The seed is printed first; the last line contains SUCCESS or FAILURE ("!!!").
// Usage: llbitmap_reactor_torture [--duration S] [--seed N] [--reactors R] [--faults]
#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/clock.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/reactor.h>
#include <llbitmap/testing/fault_storage.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "image_states.h"
#include "meta_disk.h"
#include "meta_engine.h"

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;
using test::MetaDisk;
using test::MetaEngine;

constexpr std::uint64_t kGroup = 8;  // chunks per group; group g belongs to reactor g % R

struct Args {
  double duration = 20;
  std::uint64_t seed = 0;
  int reactors = 3;
  bool faults = false;
};

std::atomic<std::uint64_t> g_violations{0};
std::mutex g_print_mu;

void violation(const std::string& what) {
  if (g_violations.fetch_add(1) < 10) {
    std::lock_guard lk(g_print_mu);
    std::printf("!!! violation: %s\n", what.c_str());
    std::fflush(stdout);
  }
}

// Relaxed: statistics only.
struct Counters {
  std::atomic<std::uint64_t> admissions{0}, pending_admissions{0}, refusals{0}, discards{0},
      completions{0}, images{0}, epochs{0}, failures{0}, data_flushes{0}, pages_cleaned{0},
      busy_closes{0}, dirty_closes{0};
};
Counters g_c;

void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
  c.fetch_add(n, std::memory_order_relaxed);  // relaxed: statistics only
}

// What must survive a crash: shared by the reactors (register, deregister) and the IO
// thread (checks), under one mutex never held across a call into the bitmap.
class Oracle {
 public:
  // After an admission.
  std::uint64_t admitted(std::uint64_t first, std::uint64_t count) {
    std::lock_guard lk(mu_);
    inflight_[++next_] = {first, count};
    return next_;
  }
  // Before end_write: the write becomes "ended, maybe unflushed" (data_flush) or nothing.
  std::uint64_t ending(std::uint64_t id, bool data_flush) {
    std::lock_guard lk(mu_);
    const auto r = inflight_.at(id);
    inflight_.erase(id);
    if (!data_flush) return 0;
    Ended e;
    for (std::uint64_t c = r.first; c < r.first + r.second; ++c) e.chunks.insert(c);
    unflushed_[++next_] = std::move(e);
    return next_;
  }
  // After end_write returned.
  void ended(std::uint64_t id) {
    std::lock_guard lk(mu_);
    if (auto it = unflushed_.find(id); it != unflushed_.end()) {
      it->second.returned = true;
      it->second.at = ++clock_;
    }
  }
  // A discard is about to start: the data of its chunks is gone (a write's other chunks
  // keep theirs).
  void discarded(std::uint64_t first, std::uint64_t count) {
    std::lock_guard lk(mu_);
    for (auto it = unflushed_.begin(); it != unflushed_.end();) {
      for (std::uint64_t c = first; c < first + count; ++c) it->second.chunks.erase(c);
      it = it->second.chunks.empty() ? unflushed_.erase(it) : std::next(it);
    }
  }
  // A kDataFlush handed out covers the writes whose end_write returned before; those
  // still inside end_write may be covered too (given the benefit of the doubt).
  void flush_handed(std::uint64_t io) {
    std::lock_guard lk(mu_);
    Flush f{clock_, {}};
    for (const auto& [id, e] : unflushed_)
      if (!e.returned) f.maybe.push_back(id);
    flushes_[io] = std::move(f);
  }
  void flush_done(std::uint64_t io, bool ok) {
    std::lock_guard lk(mu_);
    auto it = flushes_.find(io);
    if (it == flushes_.end()) return;
    if (ok) {
      for (std::uint64_t id : it->second.maybe) unflushed_.erase(id);
      for (auto u = unflushed_.begin(); u != unflushed_.end();)
        u = u->second.returned && u->second.at <= it->second.at ? unflushed_.erase(u)
                                                                : std::next(u);
    }
    flushes_.erase(it);
  }
  std::map<std::uint64_t, std::string> must() const {
    std::lock_guard lk(mu_);
    std::map<std::uint64_t, std::string> m;
    for (const auto& [id, r] : inflight_)
      for (std::uint64_t c = r.first; c < r.first + r.second; ++c) m[c] = "a write in flight";
    for (const auto& [id, e] : unflushed_)
      for (const std::uint64_t c : e.chunks) m.try_emplace(c, "an ended write not flushed");
    return m;
  }
  void reset() {
    std::lock_guard lk(mu_);
    inflight_.clear();
    unflushed_.clear();
    flushes_.clear();
  }

 private:
  struct Ended {
    std::set<std::uint64_t> chunks;  // not discarded since
    bool returned = false;           // end_write returned
    std::uint64_t at = 0;            // clock_ when it did
  };
  struct Flush {
    std::uint64_t at;
    std::vector<std::uint64_t> maybe;
  };
  mutable std::mutex mu_;
  std::uint64_t next_ = 0, clock_ = 0;
  std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> inflight_;
  std::map<std::uint64_t, Ended> unflushed_;
  std::map<std::uint64_t, Flush> flushes_;
};

struct Shared;

struct Slot : ReactorWrite {
  Slot() : ReactorWrite(&Slot::on_admit) {}
  static void on_admit(ReactorWrite& w, std::error_code ec);
  enum class St { kIdle, kPending, kInFlight } st = St::kIdle;
  Shared* sh = nullptr;
  bool is_discard = false;
  std::uint64_t first = 0, count = 0, id = 0;
};

// The epoch's state, read by the reactors.
struct Shared {
  const Args* args = nullptr;
  std::uint64_t chunk = 0, chunks = 0;
  bool data_flush = false;
  bool pipelined = false;  // ReactorOptions::pipelined_rounds
  Oracle oracle;
  // Set by the IO thread for the reactors (seq_cst: each pairs with the other side's load).
  std::atomic<ReactorBitmap*> bm{nullptr};
  std::atomic<MetaDisk*> disk{nullptr};
  std::atomic<std::uint64_t> epoch{0};  // reactors join epoch n once bm is set for it
  std::atomic<bool> quiesce{false};     // end your writes, drop your queue
  std::atomic<int> quiesced{0};         // reactors done with the epoch
  std::atomic<bool> stop{false};
};

void check_write_ahead(Shared& sh, const Slot& s) {
  MetaDisk* disk = sh.disk.load();
  const auto st = test::image_states(disk->durable_image());
  for (std::uint64_t c = s.first; c < s.first + s.count; ++c) {
    // Pipelined rounds: a later round's block may be durable without its table entry
    // (unverifiable: a crash resyncs all its chunks, this one included).
    if (sh.pipelined && c < st.size() && !st[c]) continue;
    if (c >= st.size() || !st[c] || !is_dirty_like(static_cast<ChunkState>(*st[c]))) {
      violation("write-ahead: chunk " + std::to_string(c) + " admitted while durably " +
                (c < st.size() && st[c] ? std::string(to_string(static_cast<ChunkState>(*st[c])))
                                        : std::string("unverifiable")));
      return;
    }
  }
}

void admit(Slot& s) {
  s.st = Slot::St::kInFlight;
  if (s.is_discard) {
    bump(g_c.discards);
    return;
  }
  bump(g_c.admissions);
  check_write_ahead(*s.sh, s);
  s.id = s.sh->oracle.admitted(s.first, s.count);
}

void Slot::on_admit(ReactorWrite& w, std::error_code ec) {
  auto& s = static_cast<Slot&>(w);
  if (ec) {
    bump(g_c.refusals);
    if (ec != Errc::bitmap_failed && ec != Errc::bitmap_closed)
      violation("a pending write refused with '" + ec.message() + "'");
    s.st = Slot::St::kIdle;
    return;
  }
  bump(g_c.pending_admissions);
  admit(s);
}

void end(Shared& sh, ReactorBitmap& bm, Slot& s) {
  if (s.is_discard) {
    bm.end_discard(s.first * sh.chunk, s.count * sh.chunk);
  } else {
    const std::uint64_t e = sh.oracle.ending(s.id, sh.data_flush);
    bm.end_write(s.first * sh.chunk, s.count * sh.chunk);
    sh.oracle.ended(e);
  }
  s.st = Slot::St::kIdle;
}

void reactor_main(Shared& sh, int index, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto r = static_cast<std::uint64_t>(sh.args->reactors);
  std::vector<std::unique_ptr<Slot>> slots;
  for (int i = 0; i < 4; ++i) {
    slots.push_back(std::make_unique<Slot>());
    slots.back()->sh = &sh;
  }
  std::uint64_t joined = 0;
  while (!sh.stop.load()) {
    const std::uint64_t epoch = sh.epoch.load();
    if (epoch == joined) {
      std::this_thread::yield();
      continue;
    }
    joined = epoch;
    ReactorBitmap& bm = *sh.bm.load();
    auto q = std::make_unique<ReactorQueue>(bm);
    const std::uint64_t groups = std::min<std::uint64_t>(sh.chunks, 4 * 4096) / kGroup;
    while (!sh.quiesce.load()) {
      Slot& s = *slots[rng() % slots.size()];
      const unsigned op = static_cast<unsigned>(rng() % 100);
      if (op < 40 && s.st == Slot::St::kIdle) {
        const std::uint64_t g = (rng() % (groups / r)) * r + static_cast<std::uint64_t>(index);
        s.count = 1 + rng() % 3;
        s.first = g * kGroup + rng() % (kGroup - s.count + 1);
        // A discard and a write of the same chunk at once have no defined outcome.
        s.is_discard = rng() % 8 == 0;
        bool clash = false;
        for (const auto& o : slots)
          if (o.get() != &s && o->st != Slot::St::kIdle && (s.is_discard || o->is_discard) &&
              s.first < o->first + o->count && o->first < s.first + s.count)
            clash = true;
        if (clash) continue;
        // From the call on, the discard may turn the chunks Unwritten (lazily persisted
        // by the IO thread): their old data needs no recovery any more.
        if (s.is_discard) sh.oracle.discarded(s.first, s.count);
        std::error_code ec;
        const Admit a = s.is_discard
                            ? q->start_discard(s.first * sh.chunk, s.count * sh.chunk, s, ec)
                            : q->start_write(s.first * sh.chunk, s.count * sh.chunk, s, ec);
        if (a == Admit::kRefused) {
          bump(g_c.refusals);
          if (ec != Errc::bitmap_failed && ec != Errc::bitmap_closed)
            violation("start refused with '" + ec.message() + "'");
        } else if (a == Admit::kPending) {
          s.st = Slot::St::kPending;
        } else {
          admit(s);
        }
      } else if (op < 75 && s.st == Slot::St::kInFlight) {
        end(sh, bm, s);
      } else {
        q->poll();
        if (q->event_fd() < 0) violation("no eventfd");
      }
    }
    // Quiesce: end every write, wait for the pending ones to be admitted or refused.
    const auto deadline = Steady::now() + 10s;
    for (;;) {
      bool busy = false;
      for (auto& s : slots) {
        if (s->st == Slot::St::kInFlight) end(sh, bm, *s);
        busy |= s->st != Slot::St::kIdle;
      }
      if (!busy) break;
      q->poll();
      if (Steady::now() > deadline) {
        violation("reactor " + std::to_string(index) + ": a pending write never resolved");
        std::fflush(stdout);
        std::_Exit(3);
      }
      std::this_thread::yield();
    }
    q.reset();
    sh.quiesced.fetch_add(1);
  }
}

class IoThread {
 public:
  IoThread(Shared& sh, const Args& args) : sh_(sh), args_(args), rng_(args.seed ^ 0x10) {}

  void run() {
    BitmapOptions o;
    o.device_bytes = 1ull << 30;
    o.chunk_bytes = 64 << 10;
    o.space_bytes = 128 << 10;
    o.block_bytes = rng_() % 2 ? 4096 : 512;
    o.daemon_sleep = 1000ms;
    o.barrier_idle = 50ms;
    std::error_code ec;
    std::vector<std::byte> file = ReactorBitmap::format(o, ec);
    if (ec) {
      violation("format: " + ec.message());
      return;
    }
    const auto end_at = Steady::now() + std::chrono::duration_cast<Steady::duration>(
                                            std::chrono::duration<double>(args_.duration));
    while (Steady::now() < end_at && g_violations.load() == 0)
      file = epoch(std::move(file), end_at);
    sh_.stop.store(true);
  }

 private:
  // One bitmap's life; returns its final durable image.
  std::vector<std::byte> epoch(std::vector<std::byte> file, Steady::time_point end_at) {
    MetaDisk disk(file);
    ReactorOptions ro;
    sh_.data_flush = rng_() % 2 == 0;
    ro.data_flush = sh_.data_flush;
    ro.clock = &clock_;
    ro.ordered_sync = rng_() % 2 == 0;      // a round's sync behind its writes (after_writes)
    ro.pipelined_rounds = rng_() % 2 == 0;  // the next round begins during a round's sync
    sh_.pipelined = ro.pipelined_rounds;
    std::error_code ec;
    std::unique_ptr<ReactorBitmap> bm = ReactorBitmap::open(file, ro, ec);
    if (!bm) {
      violation("reopen of the last epoch's image: " + ec.message());
      return file;
    }
    sh_.chunk = bm->chunk_bytes();
    sh_.chunks = bm->chunks();
    sh_.oracle.reset();
    MetaEngine io(*bm, disk, rng_());
    io.set_batch(ro.ordered_sync ? 16 : 1);
    io.set_handed_hook([&](const MetaEngine::Done& d) {
      if (d.kind == MetaIo::Kind::kDataFlush) sh_.oracle.flush_handed(d.id);
    });
    std::uint64_t n = 0;
    io.set_hook([&](const MetaEngine::Done& d) {
      bump(g_c.completions);
      if (d.kind == MetaIo::Kind::kDataFlush) {
        bump(g_c.data_flushes);
        sh_.oracle.flush_done(d.id, !d.result);
      }
      check(disk, ++n % 16 == 0 && bm->ready(), bm->failed());
    });
    sh_.disk.store(&disk);
    sh_.bm.store(bm.get());
    sh_.quiesce.store(false);
    sh_.quiesced.store(0);
    sh_.epoch.fetch_add(1);
    const std::uint64_t epoch_no = g_c.epochs.fetch_add(1);
    const std::uint64_t cleaned0 = bm->stats().pages_cleaned;

    const auto epoch_end = std::min(end_at, Steady::now() + 3s);
    // --faults: half of the epochs fail one block write or sync, some way into the epoch
    // (the open's first round alone writes every block).
    // The second epoch always does, so that every --faults run fails at least once.
    if (args_.faults && (epoch_no == 1 || rng_() % 2 == 0)) {
      if (rng_() % 2)
        disk.fail_write(1 + rng_() % 80);
      else
        disk.fail_sync(1 + rng_() % 12);
    }
    while (Steady::now() < epoch_end && !bm->failed() && g_violations.load() == 0) drive(*bm, io);
    // Quiesce the reactors (the IO keeps moving so their pending writes resolve).
    sh_.quiesce.store(true);
    auto deadline = Steady::now() + 10s;
    while (sh_.quiesced.load() < args_.reactors) {
      drive(*bm, io);
      if (Steady::now() > deadline) {
        violation("the reactors did not quiesce within 10 s");
        std::fflush(stdout);
        std::_Exit(3);
      }
    }
    // A close of a bitmap that is not failed, holds Dirty chunks and has data_flush on must
    // ask for a data flush: the engagement check below counts on it.
    if (sh_.data_flush && !bm->failed() && bm->counts().dirty > 0) bump(g_c.dirty_closes);
    bm->begin_close();
    std::error_code r;
    deadline = Steady::now() + 10s;
    for (;;) {
      const auto st = bm->close_state(r);
      io.pull();  // a failed bitmap still hands out its stale mark
      if (st == ReactorBitmap::CloseState::kClosed && io.outstanding().empty()) break;
      if (st == ReactorBitmap::CloseState::kOpen) {
        bump(g_c.busy_closes);
        bm->begin_close();
      }
      bm->step();
      io.drain();
      clock_.advance(5ms);
      if (Steady::now() > deadline) {
        violation("close did not finish within 10 s");
        std::fflush(stdout);
        std::_Exit(3);
      }
      std::this_thread::yield();
    }
    if (bm->failed()) {
      bump(g_c.failures);
      if (!test::image_is_stale(disk.durable_image()))
        violation("failed() is true but the durable superblock is not stale");
    } else {
      if (r) violation("close of a quiesced bitmap gave '" + r.message() + "'");
      const auto st = test::image_states(disk.durable_image());
      for (std::uint64_t c = 0; c < st.size(); ++c)
        if (!st[c] || static_cast<ChunkState>(*st[c]) == ChunkState::kDirty) {
          violation("after a clean close chunk " + std::to_string(c) + " is durably Dirty");
          break;
        }
    }
    for (const std::string& v : io.violations()) violation("engine: " + v);
    bump(g_c.pages_cleaned, bm->stats().pages_cleaned - cleaned0);
    sh_.bm.store(nullptr);
    sh_.disk.store(nullptr);
    bm.reset();
    return disk.durable_image();
  }

  void drive(ReactorBitmap& bm, MetaEngine& io) {
    const unsigned op = static_cast<unsigned>(rng_() % 100);
    if (op < 50) {
      io.pull();
      const int k = 1 + static_cast<int>(rng_() % 4);
      for (int i = 0; i < k && io.complete_one(); ++i) {
      }
    } else if (op < 65) {
      // A delay: the requests stay outstanding this round.
    } else if (op < 90) {
      clock_.advance(std::chrono::milliseconds(rng_() % 4 == 0 ? 1100 : rng_() % 60));
      bm.step();
    } else if (op < 92) {
      bm.begin_flush();
    } else {
      bm.step();
    }
    std::this_thread::yield();
  }

  // S1 on the images a crash now could leave.
  void check(MetaDisk& disk, bool all, bool failed) {
    const std::map<std::uint64_t, std::string> must = sh_.oracle.must();
    test::CrashImageLimits lim;
    lim.exhaustive_writes = all ? 4 : 0;
    lim.samples = all ? 8 : 0;
    lim.torn = all;
    lim.quick = !all;  // the durable image and everything landed
    std::vector<test::CrashImage> imgs = disk.crash_images(lim, rng_);
    for (const test::CrashImage& img : imgs) {
      bump(g_c.images);
      const std::vector<std::uint8_t>* states = open_image(img.bytes);
      if (states == nullptr) {
        violation("crash image (" + img.what + ") does not open");
        continue;
      }
      for (const auto& [c, why] : must) {
        const auto s = static_cast<ChunkState>((*states)[c]);
        if (!is_dirty_like(s)) {
          violation("crash image (" + img.what + ")" + (failed ? " of a failed bitmap" : "") +
                    " reopens chunk " + std::to_string(c) + " " + std::string(to_string(s)) +
                    " despite " + why);
          break;
        }
      }
    }
  }

  const std::vector<std::uint8_t>* open_image(const std::vector<std::byte>& img) {
    const std::string_view bytes(reinterpret_cast<const char*>(img.data()), img.size());
    const std::size_t key = std::hash<std::string_view>{}(bytes);
    if (cache_.size() > 4096) cache_.clear();
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second ? &*it->second : nullptr;
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

  Shared& sh_;
  const Args& args_;
  std::mt19937_64 rng_;
  FakeClock clock_;
  std::unordered_map<std::size_t, std::optional<std::vector<std::uint8_t>>> cache_;
};

}  // namespace
}  // namespace llbitmap

int main(int argc, char** argv) {
  using namespace llbitmap;
  Args a;
  a.seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    const std::string_view f = argv[i];
    if (f == "--duration" && i + 1 < argc)
      a.duration = std::strtod(argv[++i], nullptr);
    else if (f == "--seed" && i + 1 < argc)
      a.seed = std::strtoull(argv[++i], nullptr, 0);
    else if (f == "--reactors" && i + 1 < argc)
      a.reactors = std::max(1, std::atoi(argv[++i]));
    else if (f == "--faults")
      a.faults = true;
    else {
      std::fprintf(stderr, "usage: %s [--duration S] [--seed N] [--reactors R] [--faults]\n",
                   argv[0]);
      return 2;
    }
  }
  std::printf("seed %" PRIu64 "\n", a.seed);
  std::fflush(stdout);
  Shared sh;
  sh.args = &a;
  std::vector<std::thread> reactors;
  for (int i = 0; i < a.reactors; ++i)
    reactors.emplace_back(reactor_main, std::ref(sh), i,
                          a.seed * 31 + static_cast<std::uint64_t>(i));
  IoThread(sh, a).run();
  for (auto& t : reactors) t.join();

  const auto v = [](const std::atomic<std::uint64_t>& c) { return c.load(); };
  std::vector<std::string> missing;
  if (v(g_c.pending_admissions) == 0) missing.push_back("admissions after kPending");
  if (v(g_c.images) == 0) missing.push_back("crash images");
  if (v(g_c.pages_cleaned) == 0) missing.push_back("pages cleaned");
  // A data flush needs a pass or a close with Dirty chunks on a bitmap that is not failed;
  // a slow run with faults (sanitizers) may have had no such close.
  if (v(g_c.data_flushes) == 0 && (v(g_c.dirty_closes) > 0 || !a.faults))
    missing.push_back("data flushes");
  if (a.faults && v(g_c.failures) == 0) missing.push_back("failures");
  for (const std::string& m : missing) violation("never engaged: " + m);
  std::printf("reactor-torture: epochs %" PRIu64 ", admissions %" PRIu64 " (%" PRIu64
              " after kPending), refusals %" PRIu64 ", discards %" PRIu64 ", completions %" PRIu64
              ", crash images %" PRIu64 ", pages cleaned %" PRIu64 ", data flushes %" PRIu64
              ", failures %" PRIu64 ", busy closes %" PRIu64 ", violations %" PRIu64 ": %s\n",
              v(g_c.epochs), v(g_c.admissions), v(g_c.pending_admissions), v(g_c.refusals),
              v(g_c.discards), v(g_c.completions), v(g_c.images), v(g_c.pages_cleaned),
              v(g_c.data_flushes), v(g_c.failures), v(g_c.busy_closes), g_violations.load(),
              g_violations.load() == 0 ? "SUCCESS" : "FAILURE !!!");
  return g_violations.load() == 0 ? 0 : 1;
}
