// SPDX-License-Identifier: LGPL-2.1-or-later
//
// switch_worker.h: the library's own call_rcu thread for PercpuRef mode switches.
//
// Layer 1, private. kill() and switch_to_atomic() queue the ref here; the thread takes
// the whole queue, waits for one RCU grace period (urcu-bp synchronize_rcu) and then
// folds each ref's per-thread counters into its atomic count. liburcu's own call_rcu
// thread sleeps 10 ms between batches; this one starts the grace period as soon as it
// is woken, so a suspend+resume of an idle page costs one grace period (tens of µs).
//
// Batching: a thread inside a SwitchBatch scope queues without waking the thread; the
// scope's end wakes it once, so N kills share one grace period.
//
// Fork: the prepare handler waits for a batch in progress and holds every lock the
// switch path uses; the child starts a fresh thread on its next kill.
#pragma once

#include <llbitmap/detail/mutex.h>
#include <llbitmap/detail/thread_annotations.h>
#include <llbitmap/percpu_ref.h>

namespace llbitmap::detail {

// The kernel's percpu_ref_switch_lock (declared in percpu_ref.h, whose fields it guards)
// and percpu_ref_switch_waitq (waited on with switch_lock() held).
Mutex& switch_lock() noexcept;
CondVar& switch_waitq() noexcept;

class SwitchWorker {
 public:
  static SwitchWorker& instance() noexcept;
  // Queues `ref` for a fold after the next grace period.
  void enqueue(PercpuRef* ref) noexcept LLBM_REQUIRES(switch_lock());
  // Number of grace periods the thread has waited for (tests, benchmarks).
  unsigned long grace_periods() const noexcept;

  void begin_batch() noexcept;
  void end_batch() noexcept;

 private:
  SwitchWorker();
  void run() noexcept;
  void process(PercpuRef* batch) noexcept;
  void ensure_thread() noexcept LLBM_REQUIRES(queue_mu_);
  // The prepare handler takes the locks that the parent and child handlers release,
  // which the analysis cannot follow across functions: the three are not analysed.
  static void fork_prepare() noexcept LLBM_NO_THREAD_SAFETY_ANALYSIS;
  static void fork_parent() noexcept LLBM_NO_THREAD_SAFETY_ANALYSIS;
  static void fork_child() noexcept LLBM_NO_THREAD_SAFETY_ANALYSIS;

  Mutex batch_mu_;  // held while a batch is folded (guards no field: fork waits on it)
  mutable Mutex queue_mu_;
  CondVar queue_cv_;
  PercpuRef* head_ LLBM_GUARDED_BY(queue_mu_) = nullptr;
  PercpuRef* tail_ LLBM_GUARDED_BY(queue_mu_) = nullptr;
  bool running_ LLBM_GUARDED_BY(queue_mu_) = false;
  unsigned long grace_periods_ LLBM_GUARDED_BY(queue_mu_) = 0;
};

// Defers the switch thread's wake-up to the end of the scope (one grace period for
// every kill made inside it).
class SwitchBatch {
 public:
  SwitchBatch() noexcept { SwitchWorker::instance().begin_batch(); }
  ~SwitchBatch() { SwitchWorker::instance().end_batch(); }
  SwitchBatch(const SwitchBatch&) = delete;
  SwitchBatch& operator=(const SwitchBatch&) = delete;
};

}  // namespace llbitmap::detail
