// SPDX-License-Identifier: LGPL-2.1-or-later
#include "switch_worker.h"

#include <llbitmap/detail/check.h>
#include <llbitmap/percpu_ref.h>

#include <new>
#include <thread>

#include "percpu_area.h"
#include "rcu.h"
#include "sync_point.h"
#include <pthread.h>

namespace llbitmap::detail {

namespace {
thread_local constinit int tls_batch_depth = 0;
}  // namespace

Mutex& switch_lock() noexcept {
  static auto* mu = new Mutex;
  return *mu;
}

CondVar& switch_waitq() noexcept {
  static auto* cv = new CondVar;
  return *cv;
}

SwitchWorker& SwitchWorker::instance() noexcept {
  // Leaked: the thread may still run while static destructors do.
  static auto* worker = new SwitchWorker;
  return *worker;
}

SwitchWorker::SwitchWorker() {
  (void)switch_lock();
  (void)switch_waitq();
  (void)PercpuRegistry::instance();
  ::pthread_atfork(&SwitchWorker::fork_prepare, &SwitchWorker::fork_parent,
                   &SwitchWorker::fork_child);
}

void SwitchWorker::ensure_thread() noexcept {
  if (running_) return;
  running_ = true;
  std::thread([this] {
    // Named, so that a tool (ps, strace, a reactor engine's check) never takes it for
    // the thread that happened to start it.
    pthread_setname_np(pthread_self(), "llbm-switch");
    run();
  }).detach();
}

void SwitchWorker::enqueue(PercpuRef* ref) noexcept {
  MutexLock lk(queue_mu_);
  ref->switch_next_ = nullptr;
  if (tail_ != nullptr)
    tail_->switch_next_ = ref;
  else
    head_ = ref;
  tail_ = ref;
  ensure_thread();
  if (tls_batch_depth == 0) queue_cv_.notify_one();
}

void SwitchWorker::begin_batch() noexcept {
  ++tls_batch_depth;
}

void SwitchWorker::end_batch() noexcept {
  LLBM_CHECK(tls_batch_depth > 0, "SwitchBatch: end without begin");
  if (--tls_batch_depth == 0) {
    MutexLock lk(queue_mu_);
    if (head_ != nullptr) queue_cv_.notify_one();
  }
}

unsigned long SwitchWorker::grace_periods() const noexcept {
  MutexLock lk(queue_mu_);
  return grace_periods_;
}

void SwitchWorker::run() noexcept {
  for (;;) {
    {
      MutexLock lk(queue_mu_);
      while (head_ == nullptr) queue_cv_.wait(queue_mu_);
    }
    MutexLock batch(batch_mu_);
    PercpuRef* list = nullptr;
    {
      MutexLock lk(queue_mu_);
      list = head_;
      head_ = tail_ = nullptr;
    }
    if (list == nullptr) continue;
    // Every get that saw percpu mode ran inside a read-side section that began before
    // this grace period ends; every later one sees atomic mode.
    rcu_synchronize();
    {
      MutexLock lk(queue_mu_);
      ++grace_periods_;
    }
    process(list);
  }
}

void SwitchWorker::process(PercpuRef* list) noexcept {
  while (list != nullptr) {
    PercpuRef* ref = list;
    list = ref->switch_next_;
    ref->fold_percpu_counts();
    std::function<void()> confirm;
    {
      MutexLock lk(switch_lock());
      confirm.swap(ref->confirm_switch_);
    }
    if (confirm) confirm();
    LLBM_SYNC_POINT("switch:after_confirm");
    {
      MutexLock lk(switch_lock());
      ref->switch_pending_ = false;
    }
    switch_waitq().notify_all();
    ref->put(1);  // the reference held across the switch; may call release
    // Last access: the destructor waits for this before it frees the ref. release: pairs
    // with the acquire loads of in_flight_ in ~PercpuRef and PercpuRefFast::wait_switch_done.
    ref->in_flight_.fetch_sub(1, std::memory_order_release);
  }
}

// Fork: wait for a batch in progress, then hold every lock of the switch path so the
// child inherits none of them locked. The child has no switch thread: the next
// enqueue starts one. liburcu-bp's own fork hooks run last/first.
void SwitchWorker::fork_prepare() noexcept {
  auto& w = instance();
  w.batch_mu_.lock();
  switch_lock().lock();
  w.queue_mu_.lock();
  PercpuRegistry::instance().lock();
  urcu_bp_before_fork();
}

void SwitchWorker::fork_parent() noexcept {
  auto& w = instance();
  urcu_bp_after_fork_parent();
  PercpuRegistry::instance().unlock();
  w.queue_mu_.unlock();
  switch_lock().unlock();
  w.batch_mu_.unlock();
}

void SwitchWorker::fork_child() noexcept {
  auto& w = instance();
  urcu_bp_after_fork_child();
  PercpuRegistry::instance().unlock();
  w.running_ = false;
  // Waiters the parent had do not exist here; start from fresh condition variables.
  new (&w.queue_cv_) CondVar;
  new (&switch_waitq()) CondVar;
  PercpuRef* list = w.head_;
  w.head_ = w.tail_ = nullptr;
  w.queue_mu_.unlock();
  switch_lock().unlock();
  w.batch_mu_.unlock();
  // Finish the switches the parent had queued now, on this thread, before any new
  // thread exists: a queued ref may live on the stack of a parent thread that does not
  // exist here, and glibc gives that stack to the next thread the child creates. This
  // is the only thread, outside any read-side section, and liburcu-bp has dropped the
  // other readers: the grace period is already over.
  if (list != nullptr) w.process(list);
}

}  // namespace llbitmap::detail
