// SPDX-License-Identifier: LGPL-2.1-or-later
//
// bench_util.h: small helpers shared by the benchmark files.
#pragma once

#include <llbitmap/detail/cacheline.h>

namespace llbitmap::bench {

// Keeps the compiler from merging or eliding memory accesses across it; emits no
// instruction (the kernel's barrier()).
inline void compiler_barrier() noexcept {
  asm volatile("" ::: "memory");
}

// A shared object alone on its cache line(s), so that nothing else the benchmark
// touches shares or bounces it.
template <class T>
struct alignas(detail::kCacheLine) Padded {
  T value;
};

}  // namespace llbitmap::bench
