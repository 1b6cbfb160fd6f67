// SPDX-License-Identifier: LGPL-2.1-or-later
//
// rcu.h: the only place that includes liburcu (bulletproof flavour).
//
// Layer 0, private. Read-side sections are inlined (_LGPL_SOURCE; the project is
// LGPL-2.1-or-later like liburcu) except under ThreadSanitizer, which cannot see
// through liburcu 0.13's inline code: there the called versions are used.
//
// RcuReader::enter(h)/leave(h, w) are the inlined read lock and unlock minus urcu-bp's
// "register this thread" check and its per-section membarrier() test: callers obtain
// the handle once per thread (current(), after a full lock() registered the thread),
// check fast_sections() once with it, and take an out-of-line slow path with the full
// lock() otherwise, so the fast path stays a leaf function.
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
  using Word = unsigned long;
  static bool fast_sections() noexcept {
    return true;
  }
  static Word enter(Handle) noexcept {
    urcu_bp_read_lock();
    return 0;
  }
  static void leave(Handle, Word) noexcept {
    urcu_bp_read_unlock();
  }
#else
  // The calling thread's urcu-bp reader, or null before its first full lock().
  using Handle = struct urcu_bp_reader*;
  static Handle current() noexcept {
    return URCU_TLS(urcu_bp_reader);
  }
  // The reader's nesting word, as enter() stored it.
  using Word = unsigned long;
  // True when enter/leave may be used: urcu-bp found membarrier() at start-up, so its
  // read side orders with compiler barriers only (it would use mfence otherwise). urcu-bp
  // sets this once, before any thread registers, and never clears it.
  static bool fast_sections() noexcept {
    return urcu_bp_has_sys_membarrier != 0;
  }
  // liburcu-bp's inlined read lock (static/urcu-bp.h: the outermost lock copies the
  // grace-period counter, which carries one nesting level; a nested one adds
  // URCU_BP_GP_COUNT) and unlock (one level less), with the reader as an argument that the
  // caller keeps in a register, without the membarrier() test, and with the unlock
  // storing from a register: only this thread writes r->ctr, and every section nested in
  // between restores it, so the word the unlock would reload is the one enter() returned. That
  // keeps the unlock's store off a store-to-load chain through r->ctr.
  // Requires: r == current() != nullptr, fast_sections(); leave(r, w) with the w that the
  // matching enter(r) returned, sections properly nested.
  static Word enter(Handle r) noexcept {
    cmm_barrier();
    const Word nest = _CMM_LOAD_SHARED(r->ctr);
    Word w;
    if (LLBM_LIKELY(!(nest & URCU_BP_GP_CTR_NEST_MASK)))
      w = _CMM_LOAD_SHARED(urcu_bp_gp.ctr);
    else
      w = nest + URCU_BP_GP_COUNT;
    _CMM_STORE_SHARED(r->ctr, w);
    cmm_barrier();  // urcu_bp_smp_mb_slave() when membarrier() is available
    return w;
  }
  static void leave(Handle r, Word w) noexcept {
    cmm_barrier();  // urcu_bp_smp_mb_slave() when membarrier() is available
    _CMM_STORE_SHARED(r->ctr, w - URCU_BP_GP_COUNT);
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
