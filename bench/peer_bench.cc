// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The floor and the peers of the page barrier (docs/design.md#performance-targets). One iteration
// is one pair (inc+dec, lock+unlock); every thread of a run works on the same object, created once
// (a function-local static), so the 2-thread rows show what sharing one cache line
// costs. Time is cpu_time per thread.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
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

}  // namespace
