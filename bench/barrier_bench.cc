// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The library's layer 1-2 fast and slow paths (docs/design.md#performance-targets).
//
// Fast paths: one iteration is one pair (get+put, raise+release); every thread of a run
// works on the same ref or page, created once (a function-local static, never
// destroyed), which is the worst case for sharing. Time is cpu_time per thread.
//
// Slow paths: one iteration is one suspend+resume of idle pages, timed in real time
// (the switch thread does part of the work). The counter grace_periods says how many
// RCU grace periods the switch thread waited for per iteration: a daemon pass over N
// pages should need one, not N.
#include <llbitmap/page_barrier.h>
#include <llbitmap/percpu_ref.h>

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <span>

#include "switch_worker.h"

namespace {

using llbitmap::PageBarrier;
using llbitmap::PercpuRef;

constexpr std::chrono::milliseconds kSuspendTimeout{10000};

void BM_PercpuRefGetPut(benchmark::State& state) {
  static auto* ref = new PercpuRef([] {});
  for (auto _ : state) {
    ref->get();
    ref->put();
  }
}
BENCHMARK(BM_PercpuRefGetPut)->Threads(1)->Threads(2);

// The pair PageBarrier::raise/release is built on.
void BM_PercpuRefTrygetLivePut(benchmark::State& state) {
  static auto* ref = new PercpuRef([] {});
  for (auto _ : state) {
    bool ok = ref->tryget_live();
    benchmark::DoNotOptimize(ok);
    ref->put();
  }
}
BENCHMARK(BM_PercpuRefTrygetLivePut)->Threads(1)->Threads(2);

void BM_PageBarrierRaiseRelease(benchmark::State& state) {
  static auto* page = new PageBarrier();
  for (auto _ : state) {
    page->raise();
    page->release();
  }
}
BENCHMARK(BM_PageBarrierRaiseRelease)->Threads(1)->Threads(2);

// --- slow paths: one maintenance thread, as the daemon

unsigned long grace_periods() {
  return llbitmap::detail::SwitchWorker::instance().grace_periods();
}

// What a writer that meets a suspended page waits for, at most: kill, one grace period,
// fold, drain (nobody holds the page), resurrect.
void BM_PageBarrierSuspendResume(benchmark::State& state) {
  static auto* page = new PageBarrier();
  const unsigned long gp0 = grace_periods();
  for (auto _ : state) {
    if (!page->suspend(kSuspendTimeout)) {
      state.SkipWithError("suspend timed out on an idle page");
      break;
    }
    page->resume();
  }
  state.counters["grace_periods"] = benchmark::Counter(static_cast<double>(grace_periods() - gp0),
                                                       benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_PageBarrierSuspendResume)->UseRealTime();

// A daemon pass: suspend_many over N idle pages (one batch of kills, one grace period),
// then resume each. Target (docs/design.md#performance-targets): N = 32 costs <= 3x N = 1.
void BM_DaemonPassSuspendResume(benchmark::State& state) {
  constexpr std::size_t kMaxPages = 32;
  static auto* pages = [] {
    auto* a = new std::array<PageBarrier*, kMaxPages>;
    for (auto& p : *a) p = new PageBarrier();
    return a;
  }();
  const auto n = static_cast<std::size_t>(state.range(0));
  std::array<bool, kMaxPages> ok{};
  const std::span<PageBarrier* const> batch(pages->data(), n);
  const unsigned long gp0 = grace_periods();
  for (auto _ : state) {
    const std::size_t suspended =
        PageBarrier::suspend_many(batch, kSuspendTimeout, std::span<bool>(ok.data(), n));
    for (std::size_t i = 0; i < n; ++i) {
      if (ok[i]) batch[i]->resume();
    }
    if (suspended != n) {
      state.SkipWithError("suspend_many timed out on an idle page");
      break;
    }
  }
  state.counters["grace_periods"] = benchmark::Counter(static_cast<double>(grace_periods() - gp0),
                                                       benchmark::Counter::kAvgIterations);
  state.counters["pages"] = static_cast<double>(n);
}
BENCHMARK(BM_DaemonPassSuspendResume)->Arg(1)->Arg(32)->UseRealTime();

}  // namespace
