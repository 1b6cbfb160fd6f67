// SPDX-License-Identifier: LGPL-2.1-or-later
//
// rcu.h: the only place that includes liburcu (bulletproof flavour).
//
// Layer 0, private. Read-side sections are inlined (_LGPL_SOURCE; the project is
// LGPL-2.1-or-later like liburcu) except under ThreadSanitizer, which cannot see
// through liburcu 0.13's inline code: there the called versions are used.
//
// RcuReader::lock(h)/unlock(h) are the inlined read lock and unlock minus urcu-bp's
// "register this thread" check: callers load RcuReader::current() once, test it for
// null together with their own per-thread state, and take an out-of-line slow path
// when it is null, so the fast path stays a leaf function.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define LLBM_RCU_CALLED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LLBM_RCU_CALLED 1
#endif
#endif

#ifndef LLBM_RCU_CALLED
#ifndef _LGPL_SOURCE
#define _LGPL_SOURCE
#endif
#endif

#include <llbitmap/detail/check.h>

#include <urcu-bp.h>

namespace llbitmap::detail {

struct RcuReader {
#ifdef LLBM_RCU_CALLED
  // The called read side registers by itself: any non-null handle will do.
  using Handle = void*;
  static Handle current() noexcept {
    static char registered_by_urcu;
    return &registered_by_urcu;
  }
  static void lock(Handle) noexcept {
    urcu_bp_read_lock();
  }
  static void unlock(Handle) noexcept {
    urcu_bp_read_unlock();
  }
#else
  // The calling thread's urcu-bp reader, or null before its first full lock().
  using Handle = struct urcu_bp_reader*;
  static Handle current() noexcept {
    return URCU_TLS(urcu_bp_reader);
  }
  // liburcu-bp's inlined read lock and unlock (static/urcu-bp.h: the outermost lock
  // copies the grace-period counter, a nested one adds URCU_BP_GP_COUNT), taking the
  // reader as an argument: the caller loads it from TLS once and keeps it in a
  // register, where the inlined originals reload it after every cmm_barrier().
  // Requires: r == current() != nullptr.
  static void lock(Handle r) noexcept {
    cmm_barrier();
    const unsigned long tmp = _CMM_LOAD_SHARED(r->ctr);
    if (LLBM_LIKELY(!(tmp & URCU_BP_GP_CTR_NEST_MASK))) {
      _CMM_STORE_SHARED(r->ctr, _CMM_LOAD_SHARED(urcu_bp_gp.ctr));
      urcu_bp_smp_mb_slave();
    } else {
      _CMM_STORE_SHARED(r->ctr, tmp + URCU_BP_GP_COUNT);
    }
  }
  static void unlock(Handle r) noexcept {
    const unsigned long tmp = _CMM_LOAD_SHARED(r->ctr);
    urcu_bp_smp_mb_slave();
    _CMM_STORE_SHARED(r->ctr, tmp - URCU_BP_GP_COUNT);
    cmm_barrier();
  }
#endif
  // Full read lock and unlock, registering the thread with urcu-bp if needed (slow
  // paths).
  static void lock() noexcept {
    urcu_bp_read_lock();
  }
  static void unlock() noexcept {
    urcu_bp_read_unlock();
  }
};

// Waits for every read-side section that started before the call. Never call it from
// inside a read-side section.
inline void rcu_synchronize() noexcept {
  urcu_bp_synchronize_rcu();
}

}  // namespace llbitmap::detail
