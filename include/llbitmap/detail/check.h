// SPDX-License-Identifier: LGPL-2.1-or-later
//
// detail/check.h: contract checks.
//
// Layer 0. LLBM_CHECK(cond, fmt, ...) is always compiled: when `cond` is false it
// prints "llbitmap: <file>:<line>: <message> [check: cond]" to stderr and aborts.
// It guards programming errors (a put below zero, a double kill, a resurrect of a
// live ref, destroying an object that is still in use): carrying on after one of
// those could let a region be marked Clean under a write in flight. The message
// names the object and the rule that was broken. Environmental failures (IO errors,
// corrupt files) never go through here: they are returned as std::error_code.
//
// LLBM_DCHECK is the same check compiled only when NDEBUG is not defined; it is for
// paths too hot to pay even a predictable branch.
#pragma once

namespace llbitmap::detail {

[[noreturn]] void check_failed(const char* file, int line, const char* cond, const char* fmt,
                               ...) noexcept __attribute__((format(printf, 4, 5)));

}  // namespace llbitmap::detail

#define LLBM_LIKELY(x) __builtin_expect(!!(x), 1)
#define LLBM_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define LLBM_CHECK(cond, ...)                                                   \
  do {                                                                          \
    if (LLBM_UNLIKELY(!(cond)))                                                 \
      ::llbitmap::detail::check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)

#ifdef NDEBUG
#define LLBM_DCHECK(cond, ...) \
  do {                         \
  } while (0)
#else
#define LLBM_DCHECK(cond, ...) LLBM_CHECK(cond, __VA_ARGS__)
#endif
