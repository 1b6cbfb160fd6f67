// SPDX-License-Identifier: LGPL-2.1-or-later
//
// detail/cacheline.h: the cache-line size used to keep hot words apart.
//
// Layer 0. Every word that one thread writes often and others read (a page's mode
// word, its expire word, its atomic count) sits on its own line, so a store by one
// thread does not evict the line another thread's fast path reads.
#pragma once

#include <cstddef>

namespace llbitmap::detail {

// 64 bytes on x86-64 and most AArch64 parts. std::hardware_destructive_interference_size
// is not used: GCC warns that its value may differ between translation units.
inline constexpr std::size_t kCacheLine = 64;

}  // namespace llbitmap::detail
