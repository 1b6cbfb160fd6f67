// SPDX-License-Identifier: LGPL-2.1-or-later
//
// page_barrier_fast.h: PageBarrier::raise/release as inline functions.
//
// Layer 2, private. PageBarrier::raise/release are defined with these, and the
// bitmap's write path (layer 4) inlines them, so that start_write + end_write on a
// Dirty chunk runs no call at all in the common case: the PercpuRef fast path
// (percpu_ref_fast.h), the check-then-store of the expire word, and the out-of-line
// raise_slow() only when the page is draining or suspended.
#pragma once

#include <llbitmap/detail/check.h>
#include <llbitmap/page_barrier.h>

#include "percpu_ref_fast.h"

namespace llbitmap::detail {

struct PageBarrierFast {
  static void raise(PageBarrier& page) noexcept {
    if (LLBM_LIKELY(PercpuRefFast::tryget_live(page.active_))) {
      page.note_used();
      return;
    }
    page.raise_slow();
  }
  static void release(PageBarrier& page) noexcept { PercpuRefFast::put(page.active_, 1); }
};

}  // namespace llbitmap::detail
