// SPDX-License-Identifier: LGPL-2.1-or-later
//
// daemon.h: Daemon, the cleaning side of one bitmap (md_llbitmap_daemon_fn): its thread,
// the passes that turn Dirty into Clean, and the forced passes of flush() and close()
// (docs/design.md#the-daemon).
//
// Contract:
//   - note_dirty(): called by the write path after a chunk turned Dirty (after
//     ChunkImage::change_chunk returned Change::dirtied). Arms the daemon; takes mu_ only
//     when it was not armed, to wake the thread. Never blocks otherwise.
//   - pass(force): one pass, on the calling thread (the daemon thread, run_daemon_once,
//     flush). Passes are serialised by pass_mu_. It suspends the candidate pages (blocks
//     until their writes end, up to daemon_sleep), calls the engine's data_flush hook,
//     cleans, persists through the Persister while the pages are still suspended (blocks
//     on IO), resumes them, and re-arms only while Dirty chunks remain.
//   - between_passes(f): runs f while no pass and no close() runs (under pass_mu_), when no
//     page is draining or suspended (unless close() succeeded). A writer that backed off a
//     multi-page raise raises its pages under it (bitmap.cc, raise_range).
//   - start()/stop(): the thread; stop() joins it. Not concurrently with each other or
//     with close(). The thread sleeps daemon_sleep between passes; set_sleep() + wake()
//     applies a new value to the sleep in progress, counted from its start.
//   - close(): stops the thread, suspends every page (100 ms allowance), cleans and
//     persists everything, under pass_mu_. If a page does not drain it restarts the
//     thread and returns Errc::busy with nothing changed.
//   - Locks: mu_ (the thread's sleep and stop flag) is a leaf; pass_mu_ is held across a
//     whole pass, which takes the page barriers, the stripe locks (ChunkImage) and the
//     Persister's lock below it. Neither is taken by the write path's fast path.
#pragma once

#include <llbitmap/clock.h>
#include <llbitmap/detail/mutex.h>
#include <llbitmap/page_barrier.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "chunk_image.h"
#include "loading.h"
#include "persister.h"

namespace llbitmap {

class Daemon {
 public:
  using PageList = llbitmap::PageList;

  // Everything a pass works on; owned by the bitmap, which outlives the Daemon.
  struct Env {
    ChunkImage& image;
    Persister& persister;
    const PageList& pages;
    Clock& clock;
    const std::function<std::error_code()>& data_flush;
    // Bitmap::set_degraded's flag. relaxed loads: see BitmapImpl::degraded_.
    const std::atomic<bool>& degraded;
    bool parity;
  };

  Daemon(const Env& env, std::chrono::milliseconds sleep);
  // Stops the thread if it still runs.
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Arms the daemon: a chunk turned Dirty.
  void note_dirty() noexcept LLBM_EXCLUDES(mu_);
  // Arms the daemon without waking it (construction, before the thread starts).
  void arm() noexcept { armed_.store(true, std::memory_order_relaxed); }

  std::error_code pass(bool force) LLBM_EXCLUDES(pass_mu_);
  // Runs f() with no pass in progress: no page is draining or suspended while it runs
  // (unless close() succeeded), so f() may raise pages without waiting. f must not block.
  template <class F>
  void between_passes(F&& f) LLBM_EXCLUDES(pass_mu_) {
    detail::MutexLock lock(pass_mu_);
    f();
  }
  void start() LLBM_EXCLUDES(mu_);
  void stop() noexcept LLBM_EXCLUDES(mu_);
  // What close() did: `drained` false means Errc::busy and nothing changed.
  struct CloseResult {
    bool drained;
    std::error_code ec;
  };
  CloseResult close() LLBM_EXCLUDES(pass_mu_, mu_);

  [[nodiscard]] std::chrono::milliseconds sleep() const noexcept {
    // relaxed: a setting; a pass that reads the old value just sleeps or waits that long.
    return std::chrono::milliseconds(sleep_ms_.load(std::memory_order_relaxed));
  }
  void set_sleep(std::chrono::milliseconds d) noexcept {
    sleep_ms_.store(d.count(), std::memory_order_relaxed);  // relaxed: see sleep()
  }
  // Wakes the thread (a setting changed). It goes back to sleep unless it must stop.
  void wake() noexcept LLBM_EXCLUDES(mu_);

  // relaxed: statistics only (armed() too: BitmapStats::daemon_armed is a snapshot).
  [[nodiscard]] bool armed() const noexcept { return armed_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t passes() const noexcept {
    return passes_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t pages_cleaned() const noexcept {
    return pages_cleaned_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t suspend_timeouts() const noexcept {
    return suspend_timeouts_.load(std::memory_order_relaxed);
  }

 private:
  void main() noexcept LLBM_EXCLUDES(mu_);
  // Sleeps until daemon_sleep has passed since `start`, re-reading daemon_sleep on every
  // wake-up. Returns false if asked to stop.
  bool sleep_from(std::chrono::steady_clock::time_point start) LLBM_REQUIRES(mu_);
  // Resumes a page a pass or close() suspended; it stays expired while it holds a Dirty
  // chunk (a failed data_flush, a busy close(), an end_sync during the pass), so that the
  // next pass cleans it.
  void reopen_page(std::uint64_t page) noexcept;
  // Daemon on one suspended page; adds each block it changed to `targets`.
  void clean_page(std::uint64_t page, const TransitionContext& ctx, std::vector<Target>& targets);
  [[nodiscard]] TransitionContext context() const noexcept;

  const Env env_;

  // Dirty chunks may exist. Cleared by a pass before it reads the page counts (seq_cst),
  // set by note_dirty after a count went up (seq_cst load, then a relaxed store): a
  // store-buffering pair, so at least one side sees the other (see pass()). The thread's
  // own loads are relaxed: mu_ and the notify order what it needs to see.
  std::atomic<bool> armed_{false};
  std::atomic<std::int64_t> sleep_ms_;

  detail::Mutex mu_;  // the thread's sleep
  detail::CondVar cv_;
  bool stop_ LLBM_GUARDED_BY(mu_) = false;
  // Started and joined by start()/stop(), which the caller serialises.
  std::thread thread_;

  detail::Mutex pass_mu_;  // one pass at a time
  std::vector<bool> timeout_logged_ LLBM_GUARDED_BY(pass_mu_);

  // relaxed: statistics only.
  std::atomic<std::uint64_t> passes_{0}, pages_cleaned_{0}, suspend_timeouts_{0};
};

}  // namespace llbitmap
