// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Daemon: the cleaning daemon (md_llbitmap_daemon_fn), and flush/close, which are forced
// passes (docs/design.md#the-daemon); the contract is in daemon.h.
//
// A pass: every page that holds a Dirty chunk and has been idle for barrier_idle (or
// every such page, when forced) is suspended, all with one grace period; a page whose
// writes outlive daemon_sleep is reopened and skipped (its Dirty bits stay). Then the
// engine's data-flush hook runs, the suspended pages' Dirty chunks become Clean, the
// change is persisted while the pages are still suspended, and the pages are resumed.
// Nothing is cleaned while degraded or failed. The thread sleeps until the first chunk
// turns Dirty, then wakes every daemon_sleep while Dirty chunks remain.
#include "daemon.h"

#include <llbitmap/detail/check.h>
#include <llbitmap/error.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <span>

#include "image_ops.h"
#include "sync_point.h"
#include <pthread.h>

namespace llbitmap {

Daemon::Daemon(const Env& env, std::chrono::milliseconds sleep)
    : env_(env), sleep_ms_(sleep.count()) {
  detail::MutexLock lock(pass_mu_);
  timeout_logged_.assign(env_.pages.size(), false);
}

Daemon::~Daemon() {
  stop();
}

TransitionContext Daemon::context() const noexcept {
  // relaxed: see BitmapImpl::degraded_ and Persister::failed_.
  return transition_context(env_.degraded.load(std::memory_order_relaxed), env_.parity,
                            env_.persister.failing(std::memory_order_relaxed));
}

void Daemon::note_dirty() noexcept {
  // seq_cst: with the seq_cst increment of the page's count before it (in
  // ChunkImage::change_chunk), this pairs with pass()'s seq_cst clear of armed_ and its
  // seq_cst loads of the counts (store-buffering): either the pass sees this page's count
  // or this load sees armed_ cleared and re-arms. (Not fences: GCC's ThreadSanitizer does
  // not support them.)
  if (armed_.load(std::memory_order_seq_cst)) return;
  // relaxed: the thread reads it under mu_, which the notify below takes.
  armed_.store(true, std::memory_order_relaxed);
  detail::MutexLock lock(mu_);
  cv_.notify_all();
}

void Daemon::wake() noexcept {
  detail::MutexLock lock(mu_);
  cv_.notify_all();
}

void Daemon::clean_page(std::uint64_t page, const TransitionContext& ctx,
                        std::vector<Target>& targets) {
  image_ops::clean_page(env_.image, page, ctx, targets,
                        [this](std::uint64_t block) { env_.persister.enqueue(block); });
}

std::error_code Daemon::pass(bool force) {
  detail::MutexLock pass_lock(pass_mu_);
  // acquire failed_ (pairs with Persister::enter_failed_state); relaxed degraded_ (a
  // flag only; see BitmapImpl::degraded_).
  if (env_.persister.failing(std::memory_order_acquire) ||
      env_.degraded.load(std::memory_order_relaxed))
    return {};
  const PageList& pages = env_.pages;
  const Clock::time_point now = env_.clock.now();
  std::vector<PageBarrier*> cand;
  std::vector<std::uint64_t> idx;
  for (std::uint64_t p = 0; p < pages.size(); ++p) {
    if (!env_.image.page_has_dirty(p)) continue;
    if (force || pages[p]->expired(now)) {
      cand.push_back(pages[p].get());
      idx.push_back(p);
    }
  }
  if (cand.empty()) return {};

  std::unique_ptr<bool[]> ok(new bool[cand.size()]);
  const std::size_t n =
      PageBarrier::suspend_many(cand, sleep(), std::span<bool>(ok.get(), cand.size()));
  for (std::size_t i = 0; i < cand.size(); ++i) {
    if (ok[i]) continue;
    suspend_timeouts_.fetch_add(1, std::memory_order_relaxed);
    if (!timeout_logged_[idx[i]]) {
      timeout_logged_[idx[i]] = true;
      std::fprintf(stderr,
                   "llbitmap: page %llu: a write outlived daemon_sleep (%lld ms); page left "
                   "dirty\n",
                   static_cast<unsigned long long>(idx[i]),
                   static_cast<long long>(sleep().count()));
    }
  }
  LLBM_SYNC_POINT("daemon:after_suspend");
  std::error_code ec;
  if (n > 0) {
    passes_.fetch_add(1, std::memory_order_relaxed);
    // Clean may reach the disk only after the data it covers (docs/design.md#s1).
    if (env_.data_flush) ec = env_.data_flush();
    if (!ec) {
      std::vector<Target> targets;
      const TransitionContext ctx = context();
      for (std::size_t i = 0; i < cand.size(); ++i)
        if (ok[i]) clean_page(idx[i], ctx, targets);
      ec = env_.persister.persist(targets.data(), targets.size());  // still suspended
    }
    LLBM_SYNC_POINT("daemon:before_resume");
    for (std::size_t i = 0; i < cand.size(); ++i) {
      if (!ok[i]) continue;
      reopen_page(idx[i]);
      pages_cleaned_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Re-arm only while Dirty chunks remain. Clear first, then count, all seq_cst (the
  // other half is in ChunkImage::change_chunk and note_dirty): a chunk that turns Dirty
  // meanwhile either is counted here or finds armed_ clear and re-arms itself, so no
  // Dirty chunk is left without a daemon to clean it.
  armed_.store(false, std::memory_order_seq_cst);
  const bool dirty = env_.image.any_page_dirty();
  LLBM_SYNC_POINT("daemon:after_rearm_check");
  // relaxed: only this pass (under pass_mu_) and note_dirty store it; a note_dirty that
  // raced with the clear has stored true itself.
  if (dirty) armed_.store(true, std::memory_order_relaxed);
  return ec;
}

void Daemon::reopen_page(std::uint64_t page) noexcept {
  // relaxed: this thread's own cleaning is sequenced before it; an end_sync whose change
  // this load misses calls expire_now() after it, which the resume keeps (see
  // PageBarrier::reopen).
  const bool dirty_left = env_.image.page_has_dirty(page);
  LLBM_SYNC_POINT("daemon:reopen_checked");
  if (dirty_left)
    env_.pages[page]->resume_expired();
  else
    env_.pages[page]->resume();
}

bool Daemon::sleep_from(std::chrono::steady_clock::time_point start) {
  LLBM_SYNC_POINT("daemon:sleep");
  // A wake-up that is not a stop re-reads daemon_sleep: a shorter one ends the sleep at
  // once if that much time has passed since `start`, a longer one extends it.
  for (;;) {
    if (stop_) return false;
    const auto deadline = start + sleep();
    if (std::chrono::steady_clock::now() >= deadline) return true;
    (void)cv_.wait_until(mu_, deadline);
  }
}

void Daemon::main() noexcept {
  detail::MutexLock lock(mu_);
  while (!stop_) {
    // relaxed: note_dirty stores armed_ before it takes mu_ to notify, so a wait that
    // starts after that store sees it, and one that started before it is notified.
    if (!armed_.load(std::memory_order_relaxed)) {
      while (!stop_ && !armed_.load(std::memory_order_relaxed)) cv_.wait(mu_);
      continue;
    }
    // Sleep daemon_sleep from now (the end of the last pass, or the arming).
    if (!sleep_from(std::chrono::steady_clock::now())) break;
    mu_.unlock();
    (void)pass(false);
    mu_.lock();
  }
}

void Daemon::start() {
  {
    detail::MutexLock lock(mu_);
    stop_ = false;
  }
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "llbm-daemon");  // see SwitchWorker
    main();
  });
}

void Daemon::stop() noexcept {
  if (!thread_.joinable()) return;
  {
    detail::MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Daemon::CloseResult Daemon::close() {
  const bool had_thread = thread_.joinable();
  stop();
  detail::MutexLock pass_lock(pass_mu_);
  // Every page must be idle: suspend them all (one grace period); a page that does not
  // drain within a short grace means a write is still in flight.
  std::vector<PageBarrier*> all;
  for (auto& p : env_.pages) all.push_back(p.get());
  std::unique_ptr<bool[]> ok(new bool[all.size()]);
  const std::size_t n = PageBarrier::suspend_many(all, std::chrono::milliseconds(100),
                                                  std::span<bool>(ok.get(), all.size()));
  if (n != all.size()) {
    for (std::size_t i = 0; i < all.size(); ++i)
      if (ok[i]) reopen_page(i);
    if (had_thread) start();
    return {false, make_error_code(Errc::busy)};
  }
  Persister& persister = env_.persister;
  std::error_code ec;
  // acquire failed_ (pairs with Persister::enter_failed_state); relaxed degraded_.
  if (!persister.failing(std::memory_order_acquire) &&
      !env_.degraded.load(std::memory_order_relaxed)) {
    if (env_.data_flush) ec = env_.data_flush();
    if (!ec) {
      // Every page is suspended: Dirty -> Clean everywhere (the targets are persisted by
      // persist_all below).
      const TransitionContext ctx = context();
      std::vector<Target> targets;
      for (std::uint64_t p = 0; p < env_.pages.size(); ++p) clean_page(p, ctx, targets);
    }
  }
  if (!persister.failing(std::memory_order_acquire)) {  // acquire: as above
    {
      ChunkImage& image = env_.image;
      detail::SpinLockGuard lock(image.superblock_lock());
      image.superblock().events += 1;
      image.bump_block(image.superblock_lock(), 0);
    }
    persister.enqueue(0);
  }
  // acquire: pairs with Persister::enter_failed_state's release store, as above.
  const std::error_code pec = persister.failing(std::memory_order_acquire)
                                  ? make_error_code(Errc::bitmap_failed)
                                  : persister.persist_all();
  return {true, ec ? ec : pec};
}

}  // namespace llbitmap
