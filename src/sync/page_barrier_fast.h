// SPDX-License-Identifier: LGPL-2.1-or-later
//
// page_barrier_fast.h: PageBarrier::raise/release as inline functions.
//
// Layer 2, private. PageBarrier::raise/release are defined with these, and the
// bitmap's write path (layer 4) inlines them, so that start_write + end_write on a
// Dirty chunk runs no call at all in the common case: the PercpuRef fast path
// (percpu_ref_fast.h), the check-then-store of the expire word, and the out-of-line
// raise_slow() only when the fast path does not apply (no counter yet, or the page is
// draining or suspended). try_raise/try_release are the same without the slow paths, for
// a caller's own leaf fast path.
#pragma once

#include <llbitmap/detail/check.h>
#include <llbitmap/page_barrier.h>

#include <cstdint>

#include "percpu_ref_fast.h"

namespace llbitmap::detail {

struct PageBarrierFast {
  // raise() and release() without their slow paths, for callers that want a fast path
  // with no call in it (and so no register to save): true if done; false if nothing was
  // done and the caller must call raise() or release().
  static bool try_raise(PageBarrier& page) noexcept {
    if (LLBM_UNLIKELY(!PercpuRefFast::try_add(page.active_, 1))) return false;
    page.note_used();
    return true;
  }
  static bool try_release(PageBarrier& page) noexcept {
    return PercpuRefFast::try_add(page.active_, 0 - std::uint64_t{1});
  }

  // raise_slow() redoes the whole raise (PercpuRef's slow path first), so the fast path
  // ends in a tail call.
  static void raise(PageBarrier& page) noexcept {
    if (LLBM_LIKELY(try_raise(page))) return;
    page.raise_slow();
  }
  static void release(PageBarrier& page) noexcept { PercpuRefFast::put(page.active_, 1); }
};

}  // namespace llbitmap::detail
