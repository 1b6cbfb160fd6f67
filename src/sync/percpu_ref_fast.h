// SPDX-License-Identifier: LGPL-2.1-or-later
//
// percpu_ref_fast.h: the percpu-mode fast paths of PercpuRef as inline functions.
//
// Layer 1, private. PercpuRef::get/put/tryget/tryget_live are defined with these, and
// layer 2 (PageBarrier::raise/release) inlines them too, so that a raise is one leaf
// function with no call into another translation unit, the slow path out of line
// (docs/design.md#the-write-fast-path).
//
// Each fast path: load the calling thread's counter area (one TLS load; never null),
// find the ref's counter (one bounds check, which also fails for a thread without an
// area or without membarrier(), and two dependent loads), take the thread's urcu-bp
// reader from the area, enter the inlined read-side section, test percpu mode (acquire:
// pairs with the release store that publishes percpu mode in resurrect, so the zeroed
// counter is what we add to), add to the counter with an owner-only relaxed load and
// store, leave the section. Anything unusual (no area or block yet, an exiting thread,
// no membarrier(), atomic mode) goes to the out-of-line *_slow function, which redoes
// the whole operation with the full read lock.
#pragma once

#include <llbitmap/detail/check.h>
#include <llbitmap/percpu_ref.h>

#include <atomic>
#include <cstdint>
#include <thread>

#include "percpu_area.h"
#include "rcu.h"

namespace llbitmap::detail {

struct PercpuRefFast {
  // Owner-only update of the calling thread's counter: a relaxed load and a relaxed
  // store, no locked instruction. Ordered against the fold by the RCU grace period.
  static void add_own(std::atomic<std::uint64_t>* c, std::uint64_t v) noexcept {
    c->store(c->load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }

  // Adds v to the calling thread's counter if the fast path applies; false otherwise
  // (nothing was changed: the caller takes its slow path).
  static bool try_add(const PercpuRef& ref, std::uint64_t v) noexcept {
    const CounterArea* area = tls_counter_area;
    std::atomic<std::uint64_t>* c = area->find_fast(ref.slot_);
    if (LLBM_UNLIKELY(c == nullptr)) return false;
    const RcuReader::Handle reader = area->reader();
    const RcuReader::Word w = RcuReader::enter(reader);
    // acquire: pairs with the release store of percpu mode in resurrect().
    const bool percpu = ref.mode_.load(std::memory_order_acquire) == 0;
    if (LLBM_LIKELY(percpu)) add_own(c, v);
    RcuReader::leave(reader, w);
    return percpu;
  }

  static bool tryget_live(PercpuRef& ref) noexcept {
    if (LLBM_LIKELY(try_add(ref, 1))) return true;
    return ref.tryget_live_slow();
  }
  static bool tryget(PercpuRef& ref, std::uint64_t nr) noexcept {
    if (LLBM_LIKELY(try_add(ref, nr))) return true;
    return ref.tryget_slow(nr);
  }
  static void get(PercpuRef& ref, std::uint64_t nr) noexcept {
    if (LLBM_LIKELY(try_add(ref, nr))) return;
    ref.get_slow(nr);
  }
  static void put(PercpuRef& ref, std::uint64_t nr) noexcept {
    if (LLBM_LIKELY(try_add(ref, 0 - nr))) return;
    ref.put_slow(nr);
  }

  // Not a fast path: true once no switch of `ref` is queued or running and no release
  // callback is running. The switch thread runs confirm_kill before it drops the
  // reference it holds across the switch (as the kernel does); once this is true that
  // reference is gone too, so a count above zero means real holders. Never waits.
  static bool switch_done(const PercpuRef& ref) noexcept {
    // acquire: pairs with the release decrements of in_flight_ at the end of the switch
    // (SwitchWorker::process) and of put_atomic.
    return ref.in_flight_.load(std::memory_order_acquire) == 0;
  }
  // As switch_done(), but waits for it. Only briefly waits (the switch thread is between
  // the two steps above) when confirm_kill has run.
  static void wait_switch_done(const PercpuRef& ref) noexcept {
    while (!switch_done(ref)) std::this_thread::yield();
  }
};

}  // namespace llbitmap::detail
