// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The floor and the peers of the page barrier (docs/design.md#performance-targets). One iteration
// is one pair (inc+dec, lock+unlock); every thread of a run works on the same object, created once
// (a function-local static), so the 2-thread rows show what sharing one cache line
// costs. Time is cpu_time per thread.
//
// The two hand-written peers of PageBarrier::raise/release come last:
// BM_KernelShapeRaiseRelease (what the kernel's percpu_ref + md-llbitmap do, written by
// hand for a fixed set of pages) and BM_AsymmetricFenceRaiseRelease (the Dekker shape,
// the physical-limit reference).
#ifndef _LGPL_SOURCE
#define _LGPL_SOURCE  // liburcu-bp's read side inlined, as a hand-written fast path has it
#endif

#include <llbitmap/clock.h>

#include <benchmark/benchmark.h>
#include <urcu-bp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <shared_mutex>

#include "bench_util.h"
#include <pthread.h>

namespace {

// The floor: what a per-thread counter costs when nothing else is done. constinit and
// defined in this file: one %fs-relative add and sub, no TLS init wrapper.
thread_local constinit std::int64_t tl_counter = 0;

void BM_ThreadLocalIncDec(benchmark::State& state) {
  for (auto _ : state) {
    ++tl_counter;
    llbitmap::bench::compiler_barrier();  // forces the store and the reload
    --tl_counter;
    llbitmap::bench::compiler_barrier();
  }
}
BENCHMARK(BM_ThreadLocalIncDec)->Threads(1)->Threads(2);

// One seq_cst atomic shared by every thread: the cost of a plain shared refcount.
void BM_SharedAtomicIncDec(benchmark::State& state) {
  static auto* count = new llbitmap::bench::Padded<std::atomic<std::int64_t>>{};
  for (auto _ : state) {
    count->value.fetch_add(1, std::memory_order_seq_cst);
    count->value.fetch_sub(1, std::memory_order_seq_cst);
  }
}
BENCHMARK(BM_SharedAtomicIncDec)->Threads(1)->Threads(2);

void BM_SharedMutexShared(benchmark::State& state) {
  static auto* mu = new llbitmap::bench::Padded<std::shared_mutex>{};
  for (auto _ : state) {
    mu->value.lock_shared();
    mu->value.unlock_shared();
  }
}
BENCHMARK(BM_SharedMutexShared)->Threads(1)->Threads(2);

void BM_PthreadRwlockRead(benchmark::State& state) {
  static auto* lock = new llbitmap::bench::Padded<pthread_rwlock_t>{PTHREAD_RWLOCK_INITIALIZER};
  for (auto _ : state) {
    pthread_rwlock_rdlock(&lock->value);
    pthread_rwlock_unlock(&lock->value);
  }
}
BENCHMARK(BM_PthreadRwlockRead)->Threads(1)->Threads(2);

// --- hand-written peers of PageBarrier::raise + release
//
// Both serve a fixed number of pages, as a driver that knows its pages up front would:
// every thread has a constinit thread_local counter array indexed by the page's number
// (the user-space twin of this_cpu_inc on a percpu array), and raise stores the expire
// word only when it changes, from the coarse time word the library reads
// (Clock::coarse_now(), kept current by a subscription as PageBarrier keeps it). Neither
// implements the kill side: a page that is not live goes to an out-of-line function that
// aborts, which is where a slow path would start.

constexpr std::uint32_t kShapePages = 64;

struct alignas(llbitmap::detail::kCacheLine) ShapePage {
  explicit ShapePage(std::uint32_t i, std::chrono::milliseconds idle = std::chrono::seconds(5))
      : index(i),
        clock(&llbitmap::Clock::system()),
        idle_ns(std::chrono::duration_cast<llbitmap::Clock::duration>(idle).count()),
        tick(clock->subscribe(
            std::max<llbitmap::Clock::duration>(std::chrono::milliseconds(1), idle / 8))) {}

  // Read by every raise and release: 0 while the page is live (percpu mode).
  std::atomic<std::uintptr_t> mode{0};
  std::uint32_t index;
  llbitmap::Clock* clock;
  // Written about once per tick of the coarse word; its own line.
  alignas(llbitmap::detail::kCacheLine) std::atomic<llbitmap::Clock::rep> expire{INT64_MAX};
  std::atomic<llbitmap::Clock::rep> idle_ns;
  llbitmap::Clock::Subscription tick;

  void note_used() noexcept {
    const llbitmap::Clock::rep want =
        clock->coarse_now().time_since_epoch().count() + idle_ns.load(std::memory_order_relaxed);
    if (expire.load(std::memory_order_relaxed) != want)
      expire.store(want, std::memory_order_relaxed);
  }
};

[[noreturn, gnu::noinline, gnu::cold]] void shape_slow_path() {
  std::abort();  // not reached: the benchmarks never kill their page
}

// The kernel's shape: percpu_ref_tryget_live / percpu_ref_put (check the mode, then
// update this thread's counter, both inside an RCU read-side section: the killer marks
// the page dead, waits for a grace period and folds the counters), and
// llbitmap_raise_barrier's expire update. liburcu-bp's own inline read lock and unlock,
// registration test and membarrier test included.
thread_local constinit std::uint64_t kshape_count[kShapePages] = {};

inline void kshape_raise(ShapePage& page) noexcept {
  urcu_bp_read_lock();
  // acquire: pairs with the release store that reopens a page (resurrect).
  const bool live = page.mode.load(std::memory_order_acquire) == 0;
  if (live) ++kshape_count[page.index];
  urcu_bp_read_unlock();
  if (!live) shape_slow_path();
  page.note_used();
}

inline void kshape_release(ShapePage& page) noexcept {
  urcu_bp_read_lock();
  const bool live = page.mode.load(std::memory_order_acquire) == 0;
  if (live) --kshape_count[page.index];
  urcu_bp_read_unlock();
  if (!live) shape_slow_path();
}

void BM_KernelShapeRaiseRelease(benchmark::State& state) {
  static auto* page = new ShapePage(kShapePages / 2);
  for (auto _ : state) {
    kshape_raise(*page);
    kshape_release(*page);
  }
}
BENCHMARK(BM_KernelShapeRaiseRelease)->Threads(1)->Threads(2);

// The Dekker shape the kernel's percpu_ref avoids: update this thread's counter, a
// compiler barrier, then check the mode. The killer would mark the page dead, then call
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which orders every running thread's
// update before its check, and only then read the counters (and would have to cope with
// updates made after the mark, which a fold-and-zero cannot: see docs/fastpath.md). No
// read-side section, no fence on this side: the physical limit of a barrier with a
// per-thread counter.
thread_local constinit std::uint64_t asym_count[kShapePages] = {};

inline void asym_raise(ShapePage& page) noexcept {
  ++asym_count[page.index];
  llbitmap::bench::compiler_barrier();
  if (page.mode.load(std::memory_order_relaxed) != 0) shape_slow_path();
  page.note_used();
}

inline void asym_release(ShapePage& page) noexcept {
  --asym_count[page.index];
  llbitmap::bench::compiler_barrier();
  if (page.mode.load(std::memory_order_relaxed) != 0) shape_slow_path();
}

void BM_AsymmetricFenceRaiseRelease(benchmark::State& state) {
  static auto* page = new ShapePage(kShapePages / 2);
  for (auto _ : state) {
    asym_raise(*page);
    asym_release(*page);
  }
}
BENCHMARK(BM_AsymmetricFenceRaiseRelease)->Threads(1)->Threads(2);

}  // namespace
