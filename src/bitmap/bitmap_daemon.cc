// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The cleaning daemon (md_llbitmap_daemon_fn), and flush/close, which are forced passes.
//
// A pass: every page that holds a Dirty chunk and has been idle for barrier_idle (or
// every such page, when forced) is suspended, all with one grace period; a page whose
// writes outlive daemon_sleep is reopened and skipped (its Dirty bits stay). Then the
// engine's data-flush hook runs, the suspended pages' Dirty chunks become Clean, the
// change is persisted while the pages are still suspended, and the pages are resumed.
// Nothing is cleaned while degraded or failed. The thread sleeps until the first chunk
// turns Dirty, then wakes every daemon_sleep while Dirty chunks remain.
#include <llbitmap/bitmap.h>
#include <llbitmap/detail/check.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "bitmap_internal.h"
#include "sync_point.h"

namespace llbitmap {

bool Bitmap::page_has_dirty(std::uint64_t page) const noexcept {
  return page_dirty_[page].load(std::memory_order_relaxed) != 0;
}

namespace {
// In memory every byte is a state (loading turns the others into NeedSync), and of the
// states the Daemon action changes only Dirty.
constexpr bool daemon_changes_only_dirty() {
  for (std::uint8_t raw = 0; raw < kChunkStateCount; ++raw) {
    const Transition t = apply_action(raw, Action::kDaemon, TransitionContext{});
    const bool changes = t.changed() && to_byte(t.next) != raw;
    if (changes != (raw == to_byte(ChunkState::kDirty))) return false;
  }
  return true;
}
static_assert(daemon_changes_only_dirty(), "clean_page() looks for Dirty bytes only");
}  // namespace

// Daemon on one suspended page: its Dirty chunks become Clean, block by block, until
// the page's Dirty count says none is left (a page with one Dirty chunk near its start
// is not scanned to the end). Each block changed is added to `targets` with its latest
// change number. A chunk that end_sync turns Dirty meanwhile is either found here or
// re-arms the daemon (note_dirty).
void Bitmap::clean_page(std::uint64_t page, const TransitionContext& ctx,
                        std::vector<Target>& targets) {
  const ChunkRange r = geo_.chunks_in_page(page);
  std::uint64_t c = r.first;
  while (c < r.end && page_has_dirty(page)) {
    const std::uint64_t block = geo_.block_of_chunk(c);
    const std::uint64_t block_end = std::min(r.end, geo_.chunks_in_block(block).end);
    bool changed = false;
    for (; c < block_end; ++c) {
      if (load_byte(geo_.chunk_pos(c)) != to_byte(ChunkState::kDirty)) continue;
      if (change_chunk(c, Action::kDaemon, ctx) == 0) continue;
      changed = true;
      if (!page_has_dirty(page)) {
        c = block_end;
        break;
      }
    }
    if (changed)
      targets.push_back(Target{block, blocks_[block].dirty_seq.load(std::memory_order_acquire)});
  }
}

std::error_code Bitmap::daemon_pass(bool force) {
  std::lock_guard pass(pass_mu_);
  if (failed_.load(std::memory_order_acquire) || degraded_.load(std::memory_order_relaxed))
    return {};
  const Clock::time_point now = clock_->now();
  std::vector<PageBarrier*> cand;
  std::vector<std::uint64_t> idx;
  for (std::uint64_t p = 0; p < pages_.size(); ++p) {
    if (!page_has_dirty(p)) continue;
    if (force || pages_[p]->expired(now)) {
      cand.push_back(pages_[p].get());
      idx.push_back(p);
    }
  }
  if (cand.empty()) return {};

  std::unique_ptr<bool[]> ok(new bool[cand.size()]);
  const std::size_t n =
      PageBarrier::suspend_many(cand, daemon_sleep(), std::span<bool>(ok.get(), cand.size()));
  for (std::size_t i = 0; i < cand.size(); ++i) {
    if (ok[i]) continue;
    suspend_timeouts_.fetch_add(1, std::memory_order_relaxed);
    if (!timeout_logged_[idx[i]]) {
      timeout_logged_[idx[i]] = true;
      std::fprintf(stderr,
                   "llbitmap: page %llu: a write outlived daemon_sleep (%lld ms); page left "
                   "dirty\n",
                   static_cast<unsigned long long>(idx[i]),
                   static_cast<long long>(daemon_sleep().count()));
    }
  }
  LLBM_SYNC_POINT("daemon:after_suspend");
  std::error_code ec;
  if (n > 0) {
    daemon_passes_.fetch_add(1, std::memory_order_relaxed);
    // Clean may reach the disk only after the data it covers (SPEC §6).
    if (data_flush_) ec = data_flush_();
    if (!ec) {
      std::vector<Target> targets;
      const TransitionContext ctx = context();
      for (std::size_t i = 0; i < cand.size(); ++i)
        if (ok[i]) clean_page(idx[i], ctx, targets);
      ec = persist_targets(targets.data(), targets.size());  // still suspended
    }
    LLBM_SYNC_POINT("daemon:before_resume");
    for (std::size_t i = 0; i < cand.size(); ++i) {
      if (!ok[i]) continue;
      cand[i]->resume();
      pages_cleaned_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Re-arm only while Dirty chunks remain. Clear first, then count, all seq_cst (the
  // other half is in change_chunk/note_dirty): a chunk that turns Dirty meanwhile either
  // is counted here or finds armed_ clear and re-arms itself, so no Dirty chunk is left
  // without a daemon to clean it.
  armed_.store(false, std::memory_order_seq_cst);
  bool dirty = false;
  for (std::uint64_t p = 0; p < pages_.size() && !dirty; ++p)
    dirty = page_dirty_[p].load(std::memory_order_seq_cst) != 0;
  LLBM_SYNC_POINT("daemon:after_rearm_check");
  if (dirty) armed_.store(true, std::memory_order_relaxed);
  return ec;
}

void Bitmap::run_daemon_once() {
  LLBM_CHECK(!closed_.load(std::memory_order_relaxed), "Bitmap %p: run_daemon_once after close",
             static_cast<void*>(this));
  (void)daemon_pass(false);
}

std::error_code Bitmap::flush() {
  LLBM_CHECK(!closed_.load(std::memory_order_relaxed), "Bitmap %p: flush after close",
             static_cast<void*>(this));
  if (std::error_code ec = daemon_pass(true)) return ec;
  return persist_all();
}

void Bitmap::daemon_main() noexcept {
  std::unique_lock lk(daemon_mu_);
  while (!daemon_stop_) {
    if (!armed_.load(std::memory_order_relaxed)) {
      daemon_cv_.wait(lk,
                      [this] { return daemon_stop_ || armed_.load(std::memory_order_relaxed); });
      continue;
    }
    daemon_cv_.wait_for(lk, daemon_sleep(), [this] { return daemon_stop_; });
    if (daemon_stop_) break;
    lk.unlock();
    (void)daemon_pass(false);
    lk.lock();
  }
}

void Bitmap::start_daemon_thread() {
  {
    std::lock_guard lk(daemon_mu_);
    daemon_stop_ = false;
  }
  daemon_ = std::thread([this] { daemon_main(); });
}

void Bitmap::stop_daemon_thread() noexcept {
  if (!daemon_.joinable()) return;
  {
    std::lock_guard lk(daemon_mu_);
    daemon_stop_ = true;
  }
  daemon_cv_.notify_all();
  daemon_.join();
}

std::error_code Bitmap::close() {
  if (closed_.load(std::memory_order_acquire)) return {};
  const bool had_daemon = daemon_.joinable();
  stop_daemon_thread();
  std::lock_guard pass(pass_mu_);
  // Every page must be idle: suspend them all (one grace period); a page that does not
  // drain within a short grace means a write is still in flight.
  std::vector<PageBarrier*> all;
  for (auto& p : pages_) all.push_back(p.get());
  std::unique_ptr<bool[]> ok(new bool[all.size()]);
  const std::size_t n = PageBarrier::suspend_many(all, std::chrono::milliseconds(100),
                                                  std::span<bool>(ok.get(), all.size()));
  if (n != all.size()) {
    for (std::size_t i = 0; i < all.size(); ++i)
      if (ok[i]) all[i]->resume();
    if (had_daemon) start_daemon_thread();
    return Errc::busy;
  }
  std::error_code ec;
  if (!failed_.load(std::memory_order_acquire) && !degraded_.load(std::memory_order_relaxed)) {
    if (data_flush_) ec = data_flush_();
    if (!ec) change_range(0, geo_.chunks() - 1, Action::kDaemon, context(), nullptr);
  }
  if (!failed_.load(std::memory_order_acquire)) {
    {
      std::lock_guard lk(block_lock(0));
      sb_.events += 1;
      bump_block(0);
    }
    enqueue_block(0);
  }
  const std::error_code pec = failed_.load(std::memory_order_acquire)
                                  ? make_error_code(Errc::bitmap_failed)
                                  : persist_all();
  closed_.store(true, std::memory_order_release);
  return ec ? ec : pec;
}

}  // namespace llbitmap
