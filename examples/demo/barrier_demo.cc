// SPDX-License-Identifier: LGPL-2.1-or-later
//
// barrier_demo.cc: `llbitmap-demo barrier [--threads N] [--pages P] [--seconds S]
// [--idle MS]`: page barriers under load. Writer threads
// raise and release the PageBarriers of a set of pages while a daemon thread suspends
// and resumes the expired ones, as the bitmap's daemon does; the program prints a
// progress line once per second and a summary table at the end.
//
// Workload: each writer picks a random page per operation among the "hot" pages. A
// quarter of the pages (at least one) is cold at any time and the cold set moves by one
// page every 3/4 of the idle time, so every page regularly goes idle for longer than
// barrier_idle, expires, and is suspended; a writer that comes back to it while the
// daemon holds it meets a suspended page and waits in raise().
//
// Measuring without distorting the fast path: a raise is timed with steady_clock only
// for 1 in 64 operations, and for every raise on a page the daemon has flagged as
// being suspended (one relaxed load of a flag the daemon sets before suspend_many and
// clears after resume). The authoritative raise-wait and suspend counts come from the
// pages' own PageBarrier::stats().
#include <llbitmap/clock.h>
#include <llbitmap/detail/cacheline.h>
#include <llbitmap/detail/mutex.h>
#include <llbitmap/page_barrier.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"

namespace llbitmap::tool {
namespace {

using std::chrono::steady_clock;

struct DemoOptions {
  unsigned threads = 2;
  unsigned pages = 8;
  unsigned seconds = 5;
  std::chrono::milliseconds idle{20};
};

// How long the daemon's suspend waits for writers to leave a page. Writers hold a page
// for one operation only, so a timeout here means a writer was descheduled for this
// long while inside the page.
constexpr std::chrono::milliseconds kSuspendTimeout{1000};
// Operations between two publications of a writer's counters (and stop checks).
constexpr std::uint64_t kPublishEvery = 256;
// 1 in kSampleEvery raises is timed.
constexpr std::uint64_t kSampleEvery = 64;

// One writer's counters, on a cache line of its own. Written by the writer (relaxed
// stores of its own values), read by the main thread (relaxed loads): plain
// statistics, no ordering needed.
struct alignas(detail::kCacheLine) WriterStats {
  std::atomic<std::uint64_t> ops{0};
  std::atomic<std::uint64_t> timed{0};        // raises that were timed
  std::atomic<std::uint64_t> flagged{0};      // raises on a page flagged as suspending
  std::atomic<std::uint64_t> max_wait_ns{0};  // longest timed raise
};

// A page's "being suspended" flag, padded so that the daemon's stores to one flag do
// not invalidate the lines of the others.
struct alignas(detail::kCacheLine) SuspendFlag {
  std::atomic<bool> on{false};
};

struct Shared {
  DemoOptions opt;
  std::vector<std::unique_ptr<PageBarrier>> pages;
  std::unique_ptr<SuspendFlag[]> flags;
  std::unique_ptr<WriterStats[]> writers;
  std::atomic<bool> stop{false};
  std::int64_t shift_ns = 1;  // the cold set moves every shift_ns of the coarse clock
  unsigned cold = 1;          // pages in the cold set

  // Daemon results, written by the daemon thread, read after it is joined.
  std::uint64_t batches = 0;
  std::uint64_t daemon_suspends = 0;
  std::uint64_t daemon_timeouts = 0;
  std::uint64_t max_batch = 0;
  std::chrono::nanoseconds max_suspend_resume{0};
  std::chrono::nanoseconds total_suspend_resume{0};
  std::atomic<std::uint64_t> suspends_live{0};  // for the progress lines
  detail::Mutex mu;  // the daemon's wait between passes, and the stop notification
  detail::CondVar cv;
};

void update_max(std::atomic<std::uint64_t>& m, std::uint64_t v) {
  // Only the owning thread stores: relaxed load + store is enough.
  if (v > m.load(std::memory_order_relaxed)) m.store(v, std::memory_order_relaxed);
}

void writer_main(Shared& s, unsigned id) {
  WriterStats& st = s.writers[id];
  // xorshift64 and a multiply-shift range reduction: a few cycles, no division.
  std::uint64_t x = 0x9e3779b97f4a7c15ull ^ (std::uint64_t{id} + 1) * 0xbf58476d1ce4e5b9ull;
  const unsigned npages = s.opt.pages;
  const unsigned hot = npages - s.cold;
  Clock& clock = Clock::system();
  std::uint64_t ops = 0, timed = 0, flagged = 0, max_wait = 0;
  unsigned window = 0;  // first cold page
  for (;;) {
    if (ops % kPublishEvery == 0) {
      st.ops.store(ops, std::memory_order_relaxed);
      if (s.stop.load(std::memory_order_relaxed)) break;
      window = static_cast<unsigned>((clock.coarse_now().time_since_epoch().count() / s.shift_ns) %
                                     npages);
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const auto pick = static_cast<unsigned>(((x >> 32) * hot) >> 32);  // [0, hot)
    unsigned page = window + s.cold + pick;
    if (page >= npages) page -= npages;
    if (page >= npages) page -= npages;
    PageBarrier& pb = *s.pages[page];
    const bool suspending = s.flags[page].on.load(std::memory_order_relaxed);
    if (suspending || ops % kSampleEvery == 0) {
      const auto t0 = steady_clock::now();
      pb.raise();
      const auto t1 = steady_clock::now();
      ++timed;
      if (suspending) ++flagged;
      max_wait = std::max<std::uint64_t>(
          max_wait, static_cast<std::uint64_t>(
                        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
    } else {
      pb.raise();
    }
    pb.release();
    ++ops;
  }
  st.ops.store(ops, std::memory_order_relaxed);
  st.timed.store(timed, std::memory_order_relaxed);
  st.flagged.store(flagged, std::memory_order_relaxed);
  update_max(st.max_wait_ns, max_wait);
}

void daemon_main(Shared& s) {
  Clock& clock = Clock::system();
  const auto period = std::max(std::chrono::milliseconds(1), s.opt.idle / 4);
  std::vector<PageBarrier*> batch;
  std::vector<unsigned> ids;
  std::unique_ptr<bool[]> ok(new bool[s.opt.pages]);
  s.mu.lock();
  while (!s.stop.load(std::memory_order_relaxed)) {
    s.mu.unlock();
    batch.clear();
    ids.clear();
    const Clock::time_point now = clock.now();
    for (unsigned p = 0; p < s.opt.pages; ++p) {
      if (s.pages[p]->expired(now)) {
        batch.push_back(s.pages[p].get());
        ids.push_back(p);
      }
    }
    if (!batch.empty()) {
      for (const unsigned p : ids) s.flags[p].on.store(true, std::memory_order_relaxed);
      const auto t0 = steady_clock::now();
      const std::size_t n = PageBarrier::suspend_many(batch, kSuspendTimeout,
                                                      std::span<bool>(ok.get(), batch.size()));
      for (std::size_t i = 0; i < batch.size(); ++i)
        if (ok[i]) batch[i]->resume();
      const auto dt = steady_clock::now() - t0;
      for (const unsigned p : ids) s.flags[p].on.store(false, std::memory_order_relaxed);
      ++s.batches;
      s.daemon_suspends += n;
      s.daemon_timeouts += batch.size() - n;
      s.max_batch = std::max<std::uint64_t>(s.max_batch, batch.size());
      s.max_suspend_resume = std::max(s.max_suspend_resume, dt);
      s.total_suspend_resume += dt;
      s.suspends_live.fetch_add(n, std::memory_order_relaxed);
    }
    s.mu.lock();
    if (!s.stop.load(std::memory_order_relaxed)) (void)s.cv.wait_for(s.mu, period);
  }
  s.mu.unlock();
}

std::uint64_t total_ops(const Shared& s) {
  std::uint64_t t = 0;
  for (unsigned i = 0; i < s.opt.threads; ++i)
    t += s.writers[i].ops.load(std::memory_order_relaxed);
  return t;
}

PageBarrier::Stats page_totals(const Shared& s) {
  PageBarrier::Stats t{};
  for (const auto& p : s.pages) {
    const PageBarrier::Stats x = p->stats();
    t.raise_waits += x.raise_waits;
    t.suspends += x.suspends;
    t.suspend_waits += x.suspend_waits;
    t.suspend_timeouts += x.suspend_timeouts;
  }
  return t;
}

std::string rate(double per_second) {
  char buf[32];
  if (per_second >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f M", per_second / 1e6);
  else if (per_second >= 1e3)
    std::snprintf(buf, sizeof buf, "%.2f k", per_second / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", per_second);
  return buf;
}

double to_us(std::chrono::nanoseconds d) {
  return static_cast<double>(d.count()) / 1e3;
}

int run_demo(const DemoOptions& opt) {
  Shared s;
  s.opt = opt;
  s.cold = std::max(1u, opt.pages / 4);
  s.shift_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(opt.idle).count() * 3 / 4;
  if (s.shift_ns < 1) s.shift_ns = 1;
  s.pages.reserve(opt.pages);
  for (unsigned p = 0; p < opt.pages; ++p)
    s.pages.push_back(std::make_unique<PageBarrier>(Clock::system(), opt.idle));
  s.flags.reset(new SuspendFlag[opt.pages]);
  s.writers.reset(new WriterStats[opt.threads]);

  std::printf(
      "llbitmap-demo barrier: %u writer thread%s, %u pages (%u cold at a time, moving every "
      "%.1f ms), %u s, barrier idle %lld ms, suspend timeout %lld ms\n",
      opt.threads, opt.threads == 1 ? "" : "s", opt.pages, s.cold,
      static_cast<double>(s.shift_ns) / 1e6, opt.seconds, static_cast<long long>(opt.idle.count()),
      static_cast<long long>(kSuspendTimeout.count()));
  std::fflush(stdout);

  std::vector<std::thread> threads;
  const auto start = steady_clock::now();
  // Threads are joined below on every path; std::thread's constructor may throw, in
  // which case the ones already started are stopped first.
  try {
    threads.emplace_back(daemon_main, std::ref(s));
    for (unsigned i = 0; i < opt.threads; ++i) threads.emplace_back(writer_main, std::ref(s), i);
  } catch (...) {
    s.stop.store(true, std::memory_order_relaxed);
    s.cv.notify_all();
    for (auto& t : threads) t.join();
    throw;
  }

  std::uint64_t last_ops = 0, last_suspends = 0;
  std::uint64_t last_waits = 0;
  for (unsigned sec = 1; sec <= opt.seconds; ++sec) {
    std::this_thread::sleep_until(start + std::chrono::seconds(sec));
    const std::uint64_t ops = total_ops(s);
    const std::uint64_t sus = s.suspends_live.load(std::memory_order_relaxed);
    const std::uint64_t waits = page_totals(s).raise_waits;
    std::printf("[%3u s] %s ops/s, %llu suspends, %llu raise waits\n", sec,
                rate(static_cast<double>(ops - last_ops)).c_str(),
                static_cast<unsigned long long>(sus - last_suspends),
                static_cast<unsigned long long>(waits - last_waits));
    std::fflush(stdout);
    last_ops = ops;
    last_suspends = sus;
    last_waits = waits;
  }
  {
    detail::MutexLock lk(s.mu);
    s.stop.store(true, std::memory_order_relaxed);
  }
  s.cv.notify_all();
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(steady_clock::now() - start).count();

  std::uint64_t ops = 0, timed = 0, flagged = 0, max_wait_ns = 0;
  double min_rate = 0, max_rate = 0;
  for (unsigned i = 0; i < opt.threads; ++i) {
    const WriterStats& w = s.writers[i];
    const std::uint64_t o = w.ops.load(std::memory_order_relaxed);
    const double r = static_cast<double>(o) / secs;
    min_rate = i == 0 ? r : std::min(min_rate, r);
    max_rate = i == 0 ? r : std::max(max_rate, r);
    ops += o;
    timed += w.timed.load(std::memory_order_relaxed);
    flagged += w.flagged.load(std::memory_order_relaxed);
    max_wait_ns = std::max(max_wait_ns, w.max_wait_ns.load(std::memory_order_relaxed));
  }
  const PageBarrier::Stats pt = page_totals(s);
  const double max_wait_us = static_cast<double>(max_wait_ns) / 1e3;
  const double max_sr_us = to_us(s.max_suspend_resume);
  const double mean_sr_us =
      s.batches == 0 ? 0.0 : to_us(s.total_suspend_resume) / static_cast<double>(s.batches);

  std::printf("\nresults (%.2f s)\n", secs);
  std::printf("  %-28s %llu\n", "operations", static_cast<unsigned long long>(ops));
  std::printf("  %-28s %s\n", "ops/s total", rate(static_cast<double>(ops) / secs).c_str());
  std::printf("  %-28s min %s, max %s\n", "ops/s per thread", rate(min_rate).c_str(),
              rate(max_rate).c_str());
  std::printf("  %-28s %llu (%llu daemon passes, up to %llu per pass)\n", "suspends",
              static_cast<unsigned long long>(pt.suspends),
              static_cast<unsigned long long>(s.batches),
              static_cast<unsigned long long>(s.max_batch));
  std::printf("  %-28s %llu\n", "suspends that waited",
              static_cast<unsigned long long>(pt.suspend_waits));
  std::printf("  %-28s %llu\n", "suspend timeouts",
              static_cast<unsigned long long>(pt.suspend_timeouts));
  std::printf("  %-28s %llu\n", "raise waits", static_cast<unsigned long long>(pt.raise_waits));
  std::printf("  %-28s %.1f us (of %llu timed raises, %llu on a suspending page)\n",
              "longest raise", max_wait_us, static_cast<unsigned long long>(timed),
              static_cast<unsigned long long>(flagged));
  std::printf("  %-28s %.1f us (mean %.1f us per pass)\n", "longest suspend+resume", max_sr_us,
              mean_sr_us);
  std::printf(
      "summary: threads=%u pages=%u seconds=%.2f ops=%llu ops_per_sec=%.0f "
      "suspends=%llu suspend_timeouts=%llu raise_waits=%llu max_raise_wait_us=%.1f "
      "max_suspend_resume_us=%.1f\n",
      opt.threads, opt.pages, secs, static_cast<unsigned long long>(ops),
      static_cast<double>(ops) / secs, static_cast<unsigned long long>(pt.suspends),
      static_cast<unsigned long long>(pt.suspend_timeouts),
      static_cast<unsigned long long>(pt.raise_waits), max_wait_us, max_sr_us);
  if (pt.suspends != s.daemon_suspends || pt.suspend_timeouts != s.daemon_timeouts) {
    std::fprintf(stderr,
                 "llbitmap-demo: barrier: page counters (%llu suspends, %llu timeouts) "
                 "disagree with the daemon's (%llu, %llu)\n",
                 static_cast<unsigned long long>(pt.suspends),
                 static_cast<unsigned long long>(pt.suspend_timeouts),
                 static_cast<unsigned long long>(s.daemon_suspends),
                 static_cast<unsigned long long>(s.daemon_timeouts));
    return kExitError;
  }
  return kExitOk;
}

// Parses "--name N" into `out` within [lo, hi]; a usage message on error.
bool parse_bounded(const std::string& name, const std::string& v, std::uint64_t lo,
                   std::uint64_t hi, std::uint64_t& out, std::string& err) {
  const auto n = parse_uint(v);
  if (!n || *n < lo || *n > hi) {
    err = "barrier: " + name + ": '" + v + "' is not a number in " + std::to_string(lo) + ".." +
          std::to_string(hi);
    return false;
  }
  out = *n;
  return true;
}

}  // namespace

int cmd_barrier_demo(std::span<char* const> args) {
  DemoOptions opt;
  ArgCursor cur(args);
  while (!cur.done()) {
    std::string v, err;
    bool missing = false;
    const std::string arg(cur.peek());
    const std::string name = arg.substr(0, arg.find('='));
    std::uint64_t n = 0;
    if (cur.option("--threads", v, missing)) {
      if (missing) return usage_error("barrier: --threads needs a value");
      if (!parse_bounded(name, v, 1, 1024, n, err)) return usage_error(err);
      opt.threads = static_cast<unsigned>(n);
    } else if (cur.option("--pages", v, missing)) {
      if (missing) return usage_error("barrier: --pages needs a value");
      if (!parse_bounded(name, v, 2, 65536, n, err)) return usage_error(err);
      opt.pages = static_cast<unsigned>(n);
    } else if (cur.option("--seconds", v, missing)) {
      if (missing) return usage_error("barrier: --seconds needs a value");
      if (!parse_bounded(name, v, 1, 86400, n, err)) return usage_error(err);
      opt.seconds = static_cast<unsigned>(n);
    } else if (cur.option("--idle", v, missing)) {
      if (missing) return usage_error("barrier: --idle needs a value");
      if (!parse_bounded(name, v, 1, 86400000, n, err)) return usage_error(err);
      opt.idle = std::chrono::milliseconds(static_cast<std::int64_t>(n));
    } else {
      return usage_error("barrier: unexpected argument '" + arg + "'");
    }
  }
  return run_demo(opt);
}

}  // namespace llbitmap::tool
