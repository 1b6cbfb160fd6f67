// SPDX-License-Identifier: LGPL-2.1-or-later
//
// crash_demo.cc: `llbitmap-demo crash [--size BYTES] [--seconds S] [--seed N] [--keep]
// [--dir DIR]`: crash and recover a RAID-1 mirror (mirror/) whose write-intent
// bitmap is an llbitmap Bitmap, and show that the resync follows the dirty region, not
// the device size.
//
//   1. In a new temporary directory, create a mirror of two sparse leg files of --size
//      bytes (1 GiB) plus its bitmap.
//   2. A child process opens the mirror and runs two writer threads: random data, 4 to
//      64 KiB per write, into a hot region of 1 % of the device, plus one write elsewhere
//      every 50 ms per thread. The parent prints progress and kills the child with
//      SIGKILL at a random moment between S/3 and S seconds (--seconds 3: 1 to 3 s).
//   3. Reopen the mirror (crash recovery: Dirty chunks become NeedSync), resync with a
//      progress bar, timed, and compare the legs byte for byte.
//   4. Fail the secondary leg, write a few MiB at random places, re-add it (timed) and
//      compare again: the re-add copies exactly the chunks written while degraded.
//   5. Close the mirror and time a full copy of the device from the primary to the
//      secondary: what a resync costs without a bitmap.
//   6. Print a table. Exit status 1 if the legs differ after a resync or anything fails.
//
// The legs are sparse: reading a hole is cheaper than reading data, so the full copy of
// a real device costs more than it does here. The temporary directory is removed at the
// end unless --keep is given.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "cli.h"
#include "leg_io.h"
#include "mirror.h"
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

namespace llbitmap::tool {

int cmd_demo(std::span<char* const> args);

namespace {

using Clock = std::chrono::steady_clock;
using llbitmap::mirror::Mirror;
using llbitmap::mirror::MirrorOptions;
using llbitmap::mirror::ResyncProgress;

constexpr unsigned kWriterThreads = 2;
constexpr std::chrono::milliseconds kColdEvery{50};  // per writer thread
constexpr std::chrono::milliseconds kDaemonSleep{1000};
constexpr std::chrono::milliseconds kBarrierIdle{500};

struct DemoOptions {
  std::uint64_t size = 1ull << 30;
  unsigned seconds = 3;
  std::uint64_t seed = 0;
  bool have_seed = false;
  bool keep = false;
  std::string dir;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string pct(std::uint64_t part, std::uint64_t whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %%",
                whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return buf;
}

// Counters the writer child shares with the parent (MAP_SHARED anonymous memory). The
// child stores, the parent loads, all relaxed: progress display only.
struct ChildShared {
  std::atomic<std::uint64_t> writes{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<std::uint64_t> cold_writes{0};
  std::atomic<int> state{0};  // 0 starting, 1 writing, 2 failed
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// splitmix64: fast random data and offsets.
struct Rng {
  std::uint64_t s;
  std::uint64_t next() noexcept {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }
  void fill(std::span<std::byte> out) noexcept {
    std::size_t i = 0;
    for (; i + 8 <= out.size(); i += 8) {
      const std::uint64_t v = next();
      std::memcpy(out.data() + i, &v, 8);
    }
    for (; i < out.size(); ++i) out[i] = static_cast<std::byte>(next());
  }
};

// A progress bar on one line: redrawn in place on a terminal (at most every 100 ms),
// a single final line otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), tty_(::isatty(1) == 1) {}
  void update(double frac, const std::string& text) {
    if (!tty_) return;
    const auto now = Clock::now();
    if (now - last_ < std::chrono::milliseconds(100) && frac < 1.0) return;
    last_ = now;
    draw(frac, text);
    std::fflush(stdout);
  }
  void finish(double frac, const std::string& text) {
    if (tty_) {
      draw(frac, text);
      std::printf("\n");
    } else {
      std::printf("  %-28s %3.0f %%  %s\n", label_.c_str(), 100.0 * frac, text.c_str());
    }
    std::fflush(stdout);
  }

 private:
  void draw(double frac, const std::string& text) {
    constexpr int kWidth = 30;
    frac = std::clamp(frac, 0.0, 1.0);
    const int fill = static_cast<int>(frac * kWidth + 0.5);
    std::string bar(static_cast<std::size_t>(fill), '#');
    bar.append(static_cast<std::size_t>(kWidth - fill), '.');
    std::printf("\r  %-28s [%s] %3.0f %%  %s\033[K", label_.c_str(), bar.c_str(), 100.0 * frac,
                text.c_str());
  }
  std::string label_;
  bool tty_;
  Clock::time_point last_{};
};

MirrorOptions mirror_options(const std::filesystem::path& dir, std::uint64_t size, bool create) {
  MirrorOptions o;
  o.primary = dir / "primary.img";
  o.secondary = dir / "secondary.img";
  o.bitmap = dir / "mirror.bitmap";
  o.size = size;
  o.create = create;
  o.daemon_sleep = kDaemonSleep;
  o.barrier_idle = kBarrierIdle;
  return o;
}

// The writer child: opens the mirror and writes until it is killed. Never returns.
[[noreturn]] void writer_child(const std::filesystem::path& dir, const DemoOptions& opt,
                               std::uint64_t hot_off, std::uint64_t hot_len, ChildShared* shared) {
  std::error_code ec;
  std::unique_ptr<Mirror> m = Mirror::open(mirror_options(dir, 0, false), ec);
  if (!m) {
    shared->state.store(2, std::memory_order_relaxed);
    ::_exit(2);
  }
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kWriterThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng{opt.seed * 1000003 + t + 1};
      std::vector<std::byte> buf(64 << 10);
      auto next_cold = Clock::now() + kColdEvery;
      for (;;) {
        std::uint64_t len = (1 + rng.below(16)) * 4096;
        std::uint64_t off;
        bool cold = false;
        // Thread t keeps to its own slice of the hot region and of the device: like a
        // file system, the demo never has two writes to the same bytes in flight (their
        // order could differ between the legs, as with md raid1).
        if (Clock::now() >= next_cold) {
          cold = true;
          next_cold += kColdEvery;
          const std::uint64_t slice = opt.size / kWriterThreads / 4096 * 4096;
          off = t * slice + rng.below((slice - len) / 4096 + 1) * 4096;
        } else {
          const std::uint64_t slice = hot_len / kWriterThreads / 4096 * 4096;
          const std::uint64_t n = std::min(len, slice);
          off = hot_off + t * slice + rng.below((slice - n) / 4096 + 1) * 4096;
          len = n;
        }
        const std::span<std::byte> data(buf.data(), len);
        rng.fill(data);
        if (m->write(off, data)) {
          shared->state.store(2, std::memory_order_relaxed);
          ::_exit(3);
        }
        shared->writes.fetch_add(1, std::memory_order_relaxed);
        shared->bytes.fetch_add(len, std::memory_order_relaxed);
        if (cold) shared->cold_writes.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  shared->state.store(1, std::memory_order_relaxed);
  for (auto& th : threads) th.join();  // never: the threads write until SIGKILL
  ::_exit(4);
}

struct CrashResult {
  double ran_seconds = 0;
  std::uint64_t writes = 0, bytes = 0, cold_writes = 0;
};

// Runs the writer child and kills it. False on failure (message printed).
bool crash_writer(const std::filesystem::path& dir, const DemoOptions& opt, std::mt19937_64& rng,
                  std::uint64_t hot_off, std::uint64_t hot_len, CrashResult& out) {
  void* mem = ::mmap(nullptr, sizeof(ChildShared), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::fprintf(stderr, "llbitmap-demo: crash: mmap: %s\n", std::strerror(errno));
    return false;
  }
  auto* shared = new (mem) ChildShared;
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(stderr, "llbitmap-demo: crash: fork: %s\n", std::strerror(errno));
    ::munmap(mem, sizeof(ChildShared));
    return false;
  }
  if (pid == 0) writer_child(dir, opt, hot_off, hot_len, shared);

  bool ok = true;
  int status = 0;
  // Wait (bounded) for the child to be writing.
  const auto start_wait = Clock::now();
  while (shared->state.load(std::memory_order_relaxed) == 0 && seconds_since(start_wait) < 30 &&
         ::waitpid(pid, &status, WNOHANG) == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const double lo = std::max(0.2, opt.seconds / 3.0);
  const double kill_at = std::uniform_real_distribution<double>(lo, opt.seconds)(rng);
  if (shared->state.load(std::memory_order_relaxed) != 1) {
    ok = false;
  } else {
    const bool tty = ::isatty(1) == 1;
    const auto t0 = Clock::now();
    double last_print = 0;
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const double t = seconds_since(t0);
      if (t >= kill_at) break;
      if (shared->state.load(std::memory_order_relaxed) != 1) break;
      if (t - last_print >= (tty ? 0.1 : 0.5)) {
        last_print = t;
        const std::uint64_t w = shared->writes.load(std::memory_order_relaxed);
        const std::uint64_t b = shared->bytes.load(std::memory_order_relaxed);
        std::printf(tty ? "\r  writing: %5.2f s  %9" PRIu64 " writes  %10s\033[K"
                        : "  writing: %5.2f s  %9" PRIu64 " writes  %10s\n",
                    t, w, format_size(b).c_str());
        std::fflush(stdout);
      }
    }
    out.ran_seconds = seconds_since(t0);
    if (tty) std::printf("\r\033[K");
  }
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) ok = false;
  out.writes = shared->writes.load(std::memory_order_relaxed);
  out.bytes = shared->bytes.load(std::memory_order_relaxed);
  out.cold_writes = shared->cold_writes.load(std::memory_order_relaxed);
  ::munmap(mem, sizeof(ChildShared));
  if (!ok)
    std::fprintf(stderr, "llbitmap-demo: crash: the writer process failed (status %d)\n", status);
  return ok;
}

// Copies [0, size) of `from` to `to` in `unit` pieces, fdatasync every 64 MiB and at the
// end: what a resync does without a bitmap.
std::error_code full_copy(const std::filesystem::path& from, const std::filesystem::path& to,
                          std::uint64_t size, std::uint64_t unit, ProgressBar& bar) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return {errno, std::generic_category()};
  const int out = ::open(to.c_str(), O_RDWR | O_CLOEXEC);
  if (out < 0) {
    const int e = errno;
    ::close(in);
    return {e, std::generic_category()};
  }
  std::vector<std::byte> buf(unit);
  std::error_code ec;
  std::uint64_t unsynced = 0;
  for (std::uint64_t off = 0; off < size && !ec;) {
    const auto n = static_cast<std::size_t>(std::min(unit, size - off));
    if (!(ec = mirror::pread_all(in, buf.data(), n, off)))
      ec = mirror::pwrite_all(out, buf.data(), n, off);
    off += n;
    unsynced += n;
    if (!ec && (unsynced >= (64ull << 20) || off == size)) {
      ec = mirror::sync_fd(out);
      unsynced = 0;
    }
    bar.update(static_cast<double>(off) / static_cast<double>(size), format_size(off));
  }
  ::close(in);
  ::close(out);
  return ec;
}

int parse(std::span<char* const> args, DemoOptions& opt) {
  ArgCursor cur(args);
  while (!cur.done()) {
    std::string v;
    bool missing = false;
    const std::string arg(cur.peek());
    const std::string name = arg.substr(0, arg.find('='));
    if (cur.flag("--keep")) {
      opt.keep = true;
    } else if (cur.option("--size", v, missing)) {
      if (missing) return usage_error("crash: --size needs a value");
      const auto b = parse_size(v);
      if (!b || *b < (4ull << 20) || *b % 4096 != 0 || *b > (1ull << 40))
        return usage_error("crash: --size: '" + v + "' must be 4M .. 1T, a multiple of 4K");
      opt.size = *b;
    } else if (cur.option("--seconds", v, missing)) {
      if (missing) return usage_error("crash: --seconds needs a value");
      const auto s = parse_uint(v);
      if (!s || *s < 1 || *s > 3600)
        return usage_error("crash: --seconds: '" + v + "' must be 1 .. 3600");
      opt.seconds = static_cast<unsigned>(*s);
    } else if (cur.option("--seed", v, missing)) {
      if (missing) return usage_error("crash: --seed needs a value");
      const auto s = parse_uint(v);
      if (!s) return usage_error("crash: --seed: '" + v + "' is not a number");
      opt.seed = *s;
      opt.have_seed = true;
    } else if (cur.option("--dir", v, missing)) {
      if (missing || v.empty()) return usage_error("crash: --dir needs a value");
      opt.dir = v;
    } else {
      return usage_error("crash: unknown argument '" + arg + "'");
    }
  }
  return kExitOk;
}

// How many chunks of `runs` differ between the two leg files (before a resync: the
// writes the crash tore, one leg written and not the other).
std::error_code count_differing_chunks(
    const std::filesystem::path& a, const std::filesystem::path& b,
    const std::vector<std::pair<std::uint64_t, std::uint64_t>>& runs, std::uint64_t chunk,
    std::uint64_t& differing) {
  differing = 0;
  const int fa = ::open(a.c_str(), O_RDONLY | O_CLOEXEC);
  const int fb = ::open(b.c_str(), O_RDONLY | O_CLOEXEC);
  std::error_code ec;
  if (fa < 0 || fb < 0) ec = {errno, std::generic_category()};
  std::vector<std::byte> ba(chunk), bb(chunk);
  for (const auto& [off, len] : runs) {
    for (std::uint64_t o = off; o < off + len && !ec; o += chunk) {
      const auto n = static_cast<std::size_t>(std::min(chunk, off + len - o));
      if ((ec = mirror::pread_all(fa, ba.data(), n, o)) ||
          (ec = mirror::pread_all(fb, bb.data(), n, o)))
        break;
      if (std::memcmp(ba.data(), bb.data(), n) != 0) ++differing;
    }
  }
  if (fa >= 0) ::close(fa);
  if (fb >= 0) ::close(fb);
  return ec;
}

// The chunks [first, last] a write touches, marked in `seen`; returns how many were new.
std::uint64_t mark_chunks(std::vector<bool>& seen, std::uint64_t off, std::uint64_t len,
                          std::uint64_t chunk) {
  std::uint64_t fresh = 0;
  for (std::uint64_t c = off / chunk; c <= (off + len - 1) / chunk; ++c) {
    if (!seen[c]) ++fresh;
    seen[c] = true;
  }
  return fresh;
}

int run_demo(const DemoOptions& opt, const std::filesystem::path& dir) {
  std::mt19937_64 rng(opt.seed);
  std::error_code ec;
  const std::uint64_t size = opt.size;

  // 1. Create the mirror.
  std::unique_ptr<Mirror> m = Mirror::open(mirror_options(dir, size, true), ec);
  if (!m) {
    std::fprintf(stderr, "llbitmap-demo: crash: create the mirror in %s: %s\n", dir.c_str(),
                 ec.message().c_str());
    return kExitError;
  }
  const std::uint64_t chunk = m->chunk_bytes();
  const std::uint64_t chunks = (size + chunk - 1) / chunk;
  if ((ec = m->close())) {
    std::fprintf(stderr, "llbitmap-demo: crash: close: %s\n", ec.message().c_str());
    return kExitError;
  }
  m.reset();
  std::printf("  mirror      2 legs of %s (sparse files) + bitmap: %s chunks, %" PRIu64 " chunks\n",
              format_size(size).c_str(), format_size(chunk).c_str(), chunks);
  std::printf("  bitmap      daemon_sleep %lld ms, barrier_idle %lld ms\n",
              static_cast<long long>(kDaemonSleep.count()),
              static_cast<long long>(kBarrierIdle.count()));

  // 2. Crash: write in a child process, kill it.
  std::uint64_t hot_len = std::max<std::uint64_t>(size / 100 / 4096 * 4096, 64 << 10);
  const std::uint64_t hot_off =
      std::uniform_int_distribution<std::uint64_t>(0, (size - hot_len) / chunk)(rng) * chunk;
  hot_len = std::min(hot_len, size - hot_off);
  std::printf(
      "\n1. crash: %u writer threads, random data (4-64 KiB per write) into a hot "
      "region of %s at %s,\n   one write elsewhere every %lld ms per thread; "
      "SIGKILL at a random moment (%.1f-%u s)\n",
      kWriterThreads, format_size(hot_len).c_str(), format_size(hot_off).c_str(),
      static_cast<long long>(kColdEvery.count()), std::max(0.2, opt.seconds / 3.0), opt.seconds);
  CrashResult crash;
  if (!crash_writer(dir, opt, rng, hot_off, hot_len, crash)) return kExitError;
  std::printf("  killed the writer after %.2f s: %" PRIu64 " writes (%" PRIu64
              " elsewhere), %s written\n",
              crash.ran_seconds, crash.writes, crash.cold_writes, format_size(crash.bytes).c_str());

  // 3. Recover.
  auto t_open = Clock::now();
  m = Mirror::open(mirror_options(dir, 0, false), ec);
  if (!m) {
    std::fprintf(stderr, "llbitmap-demo: crash: reopen after the crash: %s\n",
                 ec.message().c_str());
    return kExitError;
  }
  const double open_s = seconds_since(t_open);
  const std::uint64_t need_sync = m->bitmap()->counts().need_sync;
  std::uint64_t torn = 0;
  if ((ec = count_differing_chunks(dir / "primary.img", dir / "secondary.img", m->needs_sync(),
                                   chunk, torn))) {
    std::fprintf(stderr, "llbitmap-demo: crash: compare: %s\n", ec.message().c_str());
    return kExitError;
  }
  std::printf("\n2. reopen (crash recovery) in %.3f s: the bitmap marks %" PRIu64 " of %" PRIu64
              " chunks NeedSync;\n   in %" PRIu64
              " of them the legs differ (writes in flight at the kill)\n",
              open_s, need_sync, chunks, torn);
  ResyncProgress rp;
  ProgressBar rbar("resync");
  const auto t_resync = Clock::now();
  ec = m->resync([&](const ResyncProgress& p) {
    rp = p;
    rbar.update(p.chunks_total
                    ? static_cast<double>(p.chunks_done) / static_cast<double>(p.chunks_total)
                    : 1.0,
                std::to_string(p.chunks_done) + "/" + std::to_string(p.chunks_total) + " chunks");
  });
  const double resync_s = seconds_since(t_resync);
  rbar.finish(1.0, std::to_string(rp.chunks_done) + "/" + std::to_string(rp.chunks_total) +
                       " chunks, " + format_size(rp.bytes_copied));
  if (ec) {
    std::fprintf(stderr, "llbitmap-demo: crash: resync: %s\n", ec.message().c_str());
    return kExitError;
  }
  mirror::CompareResult cmp1;
  if ((ec = mirror::compare_legs(dir / "primary.img", dir / "secondary.img", size, cmp1))) {
    std::fprintf(stderr, "llbitmap-demo: crash: compare: %s\n", ec.message().c_str());
    return kExitError;
  }
  std::printf("  compared the legs (%s read from each): %s\n",
              format_size(cmp1.bytes_compared).c_str(), cmp1.identical ? "identical" : "DIFFERENT");

  // 4. Fail the secondary, write, re-add.
  const std::uint64_t degraded_bytes = std::min<std::uint64_t>(4ull << 20, size / 16);
  std::printf("\n3. fail the secondary leg, write %s at random places, re-add it\n",
              format_size(degraded_bytes).c_str());
  m->fail_leg(1);
  std::vector<bool> seen(chunks, false);
  std::uint64_t written = 0, degraded_writes = 0, degraded_chunks = 0;
  {
    Rng wrng{opt.seed ^ 0x5eed};
    std::vector<std::byte> buf(64 << 10);
    while (written < degraded_bytes) {
      const std::uint64_t len =
          std::min<std::uint64_t>((1 + wrng.below(16)) * 4096, degraded_bytes - written);
      const std::uint64_t off = wrng.below((size - len) / 4096 + 1) * 4096;
      const std::span<std::byte> data(buf.data(), len);
      wrng.fill(data);
      if ((ec = m->write(off, data))) {
        std::fprintf(stderr, "llbitmap-demo: crash: degraded write: %s\n", ec.message().c_str());
        return kExitError;
      }
      degraded_chunks += mark_chunks(seen, off, len, chunk);
      written += len;
      ++degraded_writes;
    }
  }
  mirror::CompareResult cmp_before;
  if ((ec = mirror::compare_legs(dir / "primary.img", dir / "secondary.img", size, cmp_before))) {
    std::fprintf(stderr, "llbitmap-demo: crash: compare: %s\n", ec.message().c_str());
    return kExitError;
  }
  ResyncProgress ap;
  ProgressBar abar("re-add");
  const auto t_readd = Clock::now();
  ec = m->readd_leg(1, [&](const ResyncProgress& p) {
    ap = p;
    abar.update(p.chunks_total
                    ? static_cast<double>(p.chunks_done) / static_cast<double>(p.chunks_total)
                    : 1.0,
                std::to_string(p.chunks_done) + "/" + std::to_string(p.chunks_total) + " chunks");
  });
  const double readd_s = seconds_since(t_readd);
  abar.finish(1.0, std::to_string(ap.chunks_done) + "/" + std::to_string(ap.chunks_total) +
                       " chunks, " + format_size(ap.bytes_copied));
  if (ec) {
    std::fprintf(stderr, "llbitmap-demo: crash: re-add: %s\n", ec.message().c_str());
    return kExitError;
  }
  mirror::CompareResult cmp2;
  if ((ec = mirror::compare_legs(dir / "primary.img", dir / "secondary.img", size, cmp2))) {
    std::fprintf(stderr, "llbitmap-demo: crash: compare: %s\n", ec.message().c_str());
    return kExitError;
  }
  if ((ec = m->close())) {
    std::fprintf(stderr, "llbitmap-demo: crash: close: %s\n", ec.message().c_str());
    return kExitError;
  }
  m.reset();

  // 5. The cost without a bitmap: copy everything.
  std::printf(
      "\n4. for comparison, a full copy of the device (primary -> secondary), as a "
      "resync without a bitmap\n");
  ProgressBar fbar("full copy");
  const auto t_full = Clock::now();
  ec = full_copy(dir / "primary.img", dir / "secondary.img", size, chunk, fbar);
  const double full_s = seconds_since(t_full);
  fbar.finish(1.0, format_size(size) + " in " + std::to_string(full_s).substr(0, 5) + " s");
  if (ec) {
    std::fprintf(stderr, "llbitmap-demo: crash: full copy: %s\n", ec.message().c_str());
    return kExitError;
  }

  // 6. The table.
  const auto yes_no = [](bool b) { return b ? "yes" : "NO"; };
  char ratio[64];
  if (resync_s > 0)
    std::snprintf(ratio, sizeof ratio, "%.0fx the resync", full_s / resync_s);
  else
    std::snprintf(ratio, sizeof ratio, "-");
  std::printf("\nresults\n");
  std::printf("  crash and recovery\n");
  std::printf("    %-34s %.2f s (%" PRIu64 " writes, %s)\n", "writer killed after",
              crash.ran_seconds, crash.writes, format_size(crash.bytes).c_str());
  std::printf("    %-34s %" PRIu64 " of %" PRIu64 " (%s)\n", "chunks NeedSync after the crash",
              need_sync, chunks, pct(need_sync, chunks).c_str());
  std::printf("    %-34s %" PRIu64 "\n", "of which the legs differed", torn);
  std::printf("    %-34s %s of %s (%s)\n", "bytes resynced", format_size(rp.bytes_copied).c_str(),
              format_size(size).c_str(), pct(rp.bytes_copied, size).c_str());
  std::printf("    %-34s %.3f s\n", "resync time", resync_s);
  std::printf("    %-34s %.3f s (%s)\n", "full copy time (no bitmap)", full_s, ratio);
  std::printf("    %-34s %s\n", "legs identical after the resync", yes_no(cmp1.identical));
  std::printf("  failed and re-added leg (secondary)\n");
  std::printf("    %-34s %" PRIu64 " (%" PRIu64 " writes, %s)\n", "chunks written while degraded",
              degraded_chunks, degraded_writes, format_size(written).c_str());
  std::printf("    %-34s %" PRIu64 " (%s)\n", "chunks copied by the re-add", ap.chunks_done,
              format_size(ap.bytes_copied).c_str());
  std::printf("    %-34s %.3f s\n", "re-add time", readd_s);
  std::printf("    %-34s %s\n", "legs identical before the re-add",
              cmp_before.identical ? "yes" : "no (as expected)");
  std::printf("    %-34s %s\n", "legs identical after the re-add", yes_no(cmp2.identical));
  if (!cmp1.identical)
    std::printf("  the legs differ after the resync, first at byte %" PRIu64 "\n",
                cmp1.first_difference);
  if (!cmp2.identical)
    std::printf("  the legs differ after the re-add, first at byte %" PRIu64 "\n",
                cmp2.first_difference);
  return cmp1.identical && cmp2.identical ? kExitOk : kExitError;
}

}  // namespace

int cmd_demo(std::span<char* const> args) {
  DemoOptions opt;
  if (const int rc = parse(args, opt); rc != kExitOk) return rc;
  if (!opt.have_seed) opt.seed = std::random_device{}();
  std::filesystem::path parent = opt.dir;
  if (parent.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  std::string templ = (parent / "llbitmap-demo.XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) {
    std::fprintf(stderr, "llbitmap-demo: crash: cannot create a directory in %s: %s\n",
                 parent.c_str(), std::strerror(errno));
    return kExitError;
  }
  const std::filesystem::path dir(templ);
  std::printf(
      "llbitmap-demo crash: crash and recover a RAID-1 mirror with a write-intent bitmap\n");
  std::printf("  directory   %s (%s)\n", dir.c_str(),
              opt.keep ? "kept: --keep" : "removed at the end; --keep keeps it");
  std::printf("  seed        %" PRIu64 " (--seed %" PRIu64 " gives the same workload)\n", opt.seed,
              opt.seed);
  std::fflush(stdout);
  const int rc = run_demo(opt, dir);
  if (!opt.keep) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (ec)
      std::fprintf(stderr, "llbitmap-demo: crash: remove %s: %s\n", dir.c_str(),
                   ec.message().c_str());
  } else {
    std::printf("kept %s\n", dir.c_str());
  }
  return rc;
}

}  // namespace llbitmap::tool
