// SPDX-License-Identifier: LGPL-2.1-or-later
//
// PercpuRef: kernel percpu_ref semantics (lib/percpu-refcount.c), written for user
// space. The fast paths are the inline functions of percpu_ref_fast.h (leaf code: the
// calling thread's counter area and its liburcu-bp registration are checked first);
// anything unusual (no area yet, an exiting thread, atomic mode) calls an out-of-line
// slow path below that redoes the whole operation with the full read lock.
#include <llbitmap/detail/check.h>
#include <llbitmap/percpu_ref.h>

#include <thread>
#include <utility>

#include "percpu_area.h"
#include "percpu_ref_fast.h"
#include "rcu.h"
#include "switch_worker.h"

namespace llbitmap {

using detail::PercpuRefFast;
using detail::PercpuRegistry;
using detail::RcuReader;
using detail::SwitchWorker;

namespace {

// Kernel PERCPU_COUNT_BIAS: keeps the atomic count away from zero while the per-thread
// counters are not yet folded in.
constexpr std::uint64_t kBias = std::uint64_t{1} << 63;

// atomic_long_add_unless(count, nr, 0) / atomic_long_inc_not_zero.
inline bool add_unless_zero(std::atomic<std::uint64_t>& count, std::uint64_t nr) noexcept {
  // relaxed: only the CAS's first guess; the successful CAS below carries the ordering.
  std::uint64_t v = count.load(std::memory_order_relaxed);
  do {
    if (v == 0) return false;
    // acquire on success pairs with the release half of the put (put_atomic's fetch_sub)
    // or fold (fold_percpu_counts' fetch_add) that set v.
  } while (!count.compare_exchange_weak(v, v + nr, std::memory_order_acquire,
                                        std::memory_order_relaxed));
  return true;
}

}  // namespace

PercpuRef::PercpuRef(std::function<void()> release, RefFlags flags)
    : mode_(0),
      count_(1),
      release_(std::move(release)),
      allow_reinit_(has_flag(flags, RefFlags::kAllowReinit) ||
                    has_flag(flags, RefFlags::kInitAtomic) ||
                    has_flag(flags, RefFlags::kInitDead)) {
  // As the kernel: kInitAtomic makes atomic mode sticky (as switch_to_atomic does), so a
  // kill and resurrect leave the ref atomic until switch_to_percpu(). kInitDead alone
  // starts atomic but is not sticky. No other thread sees the ref yet: no lock needed.
  force_atomic_ = has_flag(flags, RefFlags::kInitAtomic);
  std::uintptr_t mode = 0;
  std::uint64_t count = 1;
  if (has_flag(flags, RefFlags::kInitAtomic) || has_flag(flags, RefFlags::kInitDead)) {
    mode |= kAtomic;
  } else {
    count += kBias;
  }
  if (has_flag(flags, RefFlags::kInitDead)) {
    mode |= kDead;
    count = 0;
  }
  slot_ = PercpuRegistry::instance().alloc_slot(&orphan_);
  // relaxed: published with slot_ by the release store of mode_ below.
  count_.store(count, std::memory_order_relaxed);
  // release: pairs with the acquire loads of mode_ (PercpuRefFast::try_add, the *_slow
  // paths, is_zero, is_dying): a thread that sees this mode sees slot_ and count_ too.
  mode_.store(mode, std::memory_order_release);
}

PercpuRef::~PercpuRef() {
  {
    detail::MutexLock lk(detail::switch_lock());
    LLBM_CHECK(!switch_pending_,
               "PercpuRef %p: destroyed while a switch to atomic mode is pending "
               "(wait for is_zero() or switch_to_atomic_sync() first)",
               static_cast<void*>(this));
  }
  // A switch thread or a last put may still be finishing its release callback.
  // acquire: pairs with the release decrements of in_flight_ at the end of put_atomic
  // and of SwitchWorker::process.
  while (in_flight_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  // acquire: pairs with the release stores of mode_ (start_kill, resurrect,
  // switch_mode_locked, switch_to_percpu_locked).
  const std::uintptr_t mode = mode_.load(std::memory_order_acquire);
  // acquire: pairs with the release half of the last put_atomic's fetch_sub and of the
  // fold's fetch_add.
  std::uint64_t held = count_.load(std::memory_order_acquire);
  if ((mode & kAtomic) == 0) held += sum_percpu_counts() - kBias;
  if ((mode & kDead) != 0) {
    LLBM_CHECK(held == 0,
               "PercpuRef %p: destroyed while dying with %lld references still held "
               "(wait for is_zero() first)",
               static_cast<void*>(this), static_cast<long long>(held));
  } else {
    LLBM_CHECK(held <= 1, "PercpuRef %p: destroyed with %lld references beyond the initial one",
               static_cast<void*>(this), static_cast<long long>(held) - 1);
  }
  PercpuRegistry::instance().free_slot(slot_);
}

// ---------------------------------------------------------------- fast paths

bool PercpuRef::tryget_live() noexcept {
  return PercpuRefFast::tryget_live(*this);
}

bool PercpuRef::tryget(std::uint64_t nr) noexcept {
  return PercpuRefFast::tryget(*this, nr);
}

void PercpuRef::get(std::uint64_t nr) noexcept {
  PercpuRefFast::get(*this, nr);
}

void PercpuRef::put(std::uint64_t nr) noexcept {
  PercpuRefFast::put(*this, nr);
}

// ---------------------------------------------------------------- slow paths
//
// Each redoes the operation under the full read lock. In percpu mode the count goes to
// the thread's counter (created here if needed) or, for a thread that is exiting, to the
// ref's orphan counter; both are folded after the grace period.
//
// Memory orders, the same in all four: the acquire load of mode_ pairs with the release
// stores of mode_ (constructor, start_kill, resurrect, switch_mode_locked,
// switch_to_percpu_locked), as in PercpuRefFast::try_add. The orphan counter is changed
// relaxed inside the read-side section: like the per-thread counters, the grace period
// orders it before the fold's read. An atomic-mode get (a relaxed add to count_) needs no
// order of its own: the put that drops the reference publishes (put_atomic).

bool PercpuRef::tryget_live_slow() noexcept {
  std::atomic<std::uint64_t>* c = PercpuRegistry::instance().counter_for_current_thread(slot_);
  RcuReader::lock();
  bool ok = false;
  const std::uintptr_t mode = mode_.load(std::memory_order_acquire);  // pairs: see above
  if (mode == 0) {
    if (c != nullptr)
      PercpuRefFast::add_own(c, 1);
    else
      orphan_.fetch_add(1, std::memory_order_relaxed);  // ordered by the grace period
    ok = true;
  } else if ((mode & kDead) != 0) {
    ok = false;
  } else {
    ok = add_unless_zero(count_, 1);
  }
  RcuReader::unlock();
  return ok;
}

bool PercpuRef::tryget_slow(std::uint64_t nr) noexcept {
  std::atomic<std::uint64_t>* c = PercpuRegistry::instance().counter_for_current_thread(slot_);
  RcuReader::lock();
  bool ok = false;
  if (mode_.load(std::memory_order_acquire) == 0) {  // pairs: see above
    if (c != nullptr)
      PercpuRefFast::add_own(c, nr);
    else
      orphan_.fetch_add(nr, std::memory_order_relaxed);  // ordered by the grace period
    ok = true;
  } else {
    ok = add_unless_zero(count_, nr);
  }
  RcuReader::unlock();
  return ok;
}

void PercpuRef::get_slow(std::uint64_t nr) noexcept {
  std::atomic<std::uint64_t>* c = PercpuRegistry::instance().counter_for_current_thread(slot_);
  RcuReader::lock();
  if (mode_.load(std::memory_order_acquire) == 0) {  // pairs: see above
    if (c != nullptr)
      PercpuRefFast::add_own(c, nr);
    else
      orphan_.fetch_add(nr, std::memory_order_relaxed);  // ordered by the grace period
  } else {
    count_.fetch_add(nr, std::memory_order_relaxed);  // a get: the put publishes
  }
  RcuReader::unlock();
}

void PercpuRef::put_slow(std::uint64_t nr) noexcept {
  std::atomic<std::uint64_t>* c = PercpuRegistry::instance().counter_for_current_thread(slot_);
  RcuReader::lock();
  if (mode_.load(std::memory_order_acquire) == 0) {  // pairs: see above
    if (c != nullptr)
      PercpuRefFast::add_own(c, 0 - nr);
    else
      orphan_.fetch_sub(nr, std::memory_order_relaxed);  // ordered by the grace period
    RcuReader::unlock();
    return;
  }
  RcuReader::unlock();
  put_atomic(nr);
}

void PercpuRef::put_atomic(std::uint64_t nr) noexcept {
  // relaxed: program order puts it before the fetch_sub below, whose release half
  // publishes it to whoever sees zero (and only then may destroy the ref).
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  // acq_rel: the release half publishes this thread's work to whoever sees zero (pairs
  // with is_zero()'s and the destructor's acquire loads of count_); the acquire half
  // orders release_() after every other thread's put (pairs with their fetch_sub here).
  const std::uint64_t old = count_.fetch_sub(nr, std::memory_order_acq_rel);
  LLBM_CHECK(old >= nr, "PercpuRef %p: put(%llu) below zero (count was %llu): more puts than gets",
             static_cast<void*>(this), static_cast<unsigned long long>(nr),
             static_cast<unsigned long long>(old));
  if (old == nr && release_) release_();
  // release: pairs with the acquire loads of in_flight_ in the destructor and in
  // PercpuRefFast::wait_switch_done (release_() has finished).
  in_flight_.fetch_sub(1, std::memory_order_release);
}

// ---------------------------------------------------------------- mode switching

std::uint64_t PercpuRef::sum_percpu_counts() const noexcept {
  return PercpuRegistry::instance().sum(slot_);
}

// Runs on the switch thread after a grace period: no thread is inside a percpu-mode
// get or put any more, so the sum is stable.
void PercpuRef::fold_percpu_counts() noexcept {
  const std::uint64_t sum = sum_percpu_counts();
  // acq_rel: the release half pairs with the acquire half of the put_atomic that later
  // reaches zero (and with is_zero()'s acquire load); the acquire half pairs with the
  // release half of the atomic-mode puts that came before the fold.
  const std::uint64_t now =
      count_.fetch_add(sum - kBias, std::memory_order_acq_rel) + (sum - kBias);
  LLBM_CHECK(static_cast<std::int64_t>(now) > 0,
             "PercpuRef %p: count %lld <= 0 after switching to atomic mode: put below zero",
             static_cast<void*>(this), static_cast<long long>(now));
}

// Kernel __percpu_ref_switch_mode (switch_lock held): wait for a pending switch,
// then go to atomic mode if dying or forced, else to percpu mode.
void PercpuRef::switch_mode_locked() {
  while (switch_pending_) detail::switch_waitq().wait(detail::switch_lock());
  // relaxed: every store of mode_ (after the constructor) is made under switch_lock,
  // which is held here.
  const std::uintptr_t mode = mode_.load(std::memory_order_relaxed);
  if (force_atomic_ || (mode & kDead) != 0) {
    if ((mode & kAtomic) != 0) {
      if (confirm_switch_) std::exchange(confirm_switch_, nullptr)();
      return;
    }
    // release: pairs with the acquire loads of mode_ (PercpuRefFast::try_add, the slow
    // paths, is_zero): a get that sees atomic mode goes to count_.
    mode_.store(mode | kAtomic, std::memory_order_release);
    switch_pending_ = true;
    // relaxed: under switch_lock, which the destructor takes before it reads in_flight_.
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    // The reference held across the switch: mode is atomic now, so it goes to count_.
    // relaxed: a get; the put of it in SwitchWorker::process publishes (put_atomic).
    count_.fetch_add(1, std::memory_order_relaxed);
    SwitchWorker::instance().enqueue(this);
  } else {
    switch_to_percpu_locked();
  }
}

void PercpuRef::switch_to_percpu_locked() {
  const std::uintptr_t mode = mode_.load(std::memory_order_relaxed);  // switch_lock held
  if ((mode & kAtomic) == 0) return;
  LLBM_CHECK(allow_reinit_, "PercpuRef %p: switch back to percpu mode needs RefFlags::kAllowReinit",
             static_cast<void*>(this));
  // relaxed, like the zeroing: both are published by the release store of mode_ below.
  count_.fetch_add(kBias, std::memory_order_relaxed);
  PercpuRegistry::instance().zero(slot_);
  // release: pairs with the acquire load of mode_ in PercpuRefFast::try_add and the slow
  // paths: the zeroed counters are visible to every get that sees percpu mode.
  mode_.store(mode & ~kAtomic, std::memory_order_release);
}

void PercpuRef::start_kill(std::function<void()> confirm) {
  detail::switch_lock().lock();
  const std::uintptr_t mode = mode_.load(std::memory_order_relaxed);  // switch_lock held
  LLBM_CHECK((mode & kDead) == 0, "PercpuRef %p: kill() called more than once",
             static_cast<void*>(this));
  // Dying is visible to tryget_live at once; atomic mode follows after the wait below.
  // release: pairs with the acquire loads of mode_ in is_dying() and tryget_live_slow.
  mode_.store(mode | kDead, std::memory_order_release);
  confirm_switch_ = std::move(confirm);
  switch_mode_locked();
  detail::switch_lock().unlock();
}

void PercpuRef::kill() noexcept {
  start_kill(nullptr);
  put(1);  // the initial reference; the bias keeps it from reaching zero early
}

void PercpuRef::kill_and_confirm(std::function<void()> confirm_kill) {
  start_kill(std::move(confirm_kill));
  put(1);
}

void PercpuRef::resurrect() noexcept {
  detail::switch_lock().lock();
  const std::uintptr_t mode = mode_.load(std::memory_order_relaxed);  // switch_lock held
  LLBM_CHECK((mode & kDead) != 0, "PercpuRef %p: resurrect() of a ref that is not dying",
             static_cast<void*>(this));
  LLBM_CHECK(allow_reinit_, "PercpuRef %p: resurrect() needs RefFlags::kAllowReinit",
             static_cast<void*>(this));
  // release: pairs with the acquire loads of mode_ in is_dying(), PercpuRefFast::try_add
  // and the slow paths: what the caller did before resurrect() is visible to them.
  mode_.store(mode & ~kDead, std::memory_order_release);
  count_.fetch_add(1, std::memory_order_relaxed);  // the initial reference, back (a get)
  switch_mode_locked();
  detail::switch_lock().unlock();
}

void PercpuRef::reinit() noexcept {
  LLBM_CHECK(is_zero(), "PercpuRef %p: reinit() of a ref that is not zero",
             static_cast<void*>(this));
  resurrect();
}

void PercpuRef::switch_to_atomic() {
  detail::switch_lock().lock();
  force_atomic_ = true;
  switch_mode_locked();
  detail::switch_lock().unlock();
}

void PercpuRef::switch_to_atomic_sync() {
  switch_to_atomic();
  detail::MutexLock lk(detail::switch_lock());
  while (switch_pending_) detail::switch_waitq().wait(detail::switch_lock());
}

void PercpuRef::switch_to_percpu() {
  detail::switch_lock().lock();
  force_atomic_ = false;
  switch_mode_locked();
  detail::switch_lock().unlock();
}

bool PercpuRef::is_zero() const noexcept {
  // acquire: pairs with the release store of atomic mode in switch_mode_locked.
  if ((mode_.load(std::memory_order_acquire) & kAtomic) == 0) return false;
  // acquire: pairs with the last put's release (put_atomic's fetch_sub, or the fold's
  // fetch_add), so the caller sees the holders' work.
  return count_.load(std::memory_order_acquire) == 0;
}

bool PercpuRef::is_dying() const noexcept {
  // acquire: pairs with the release stores of mode_ in start_kill and resurrect.
  return (mode_.load(std::memory_order_acquire) & kDead) != 0;
}

}  // namespace llbitmap
