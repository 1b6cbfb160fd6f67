// SPDX-License-Identifier: LGPL-2.1-or-later
//
// rcu.h: the only place that includes liburcu (bulletproof flavour).
//
// Layer 0, private. Read-side sections are inlined (_LGPL_SOURCE; the project is
// LGPL-2.1-or-later like liburcu) except under ThreadSanitizer, which cannot see
// through liburcu 0.13's inline code: there the called versions are used.
//
// RcuReader::lock_registered() is the inlined read lock minus urcu-bp's
// "register this thread" check: callers test RcuReader::registered() first (together
// with their own per-thread state) and take an out-of-line slow path otherwise, so the
// fast path stays a leaf function.
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

#include <urcu-bp.h>

namespace llbitmap::detail {

struct RcuReader {
#ifdef LLBM_RCU_CALLED
  static bool registered() noexcept {
    return true;
  }
  static void lock_registered() noexcept {
    urcu_bp_read_lock();
  }
  static void unlock() noexcept {
    urcu_bp_read_unlock();
  }
#else
  static bool registered() noexcept {
    return URCU_TLS(urcu_bp_reader) != nullptr;
  }
  static void lock_registered() noexcept {
    cmm_barrier();
    _urcu_bp_read_lock_update(URCU_TLS(urcu_bp_reader)->ctr);
  }
  static void unlock() noexcept {
    _urcu_bp_read_unlock();
  }
#endif
  // Full read lock, registering the thread with urcu-bp if needed (slow paths).
  static void lock() noexcept {
    urcu_bp_read_lock();
  }
};

// Waits for every read-side section that started before the call. Never call it from
// inside a read-side section.
inline void rcu_synchronize() noexcept {
  urcu_bp_synchronize_rcu();
}

}  // namespace llbitmap::detail
