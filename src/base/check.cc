// SPDX-License-Identifier: LGPL-2.1-or-later
#include <llbitmap/detail/check.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace llbitmap::detail {

void check_failed(const char* file, int line, const char* cond, const char* fmt, ...) noexcept {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "llbitmap: %s:%d: %s [check failed: %s]\n", file, line, msg, cond);
  std::fflush(stderr);
  std::abort();
}

}  // namespace llbitmap::detail
