// SPDX-License-Identifier: LGPL-2.1-or-later
//
// A consumer of llbitmap that sees only the public headers, built by every way of
// consuming the library that tests/install/ checks. Prints "OK" and exits 0 on success.
#include <llbitmap/page_barrier.h>
#include <llbitmap/percpu_ref.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

namespace {

int fail(const char* what) {
  std::fputs("consumer: ", stderr);
  std::fputs(what, stderr);
  std::fputs("\n", stderr);
  return 1;
}

}  // namespace

int main() {
  std::atomic<int> released{0};
  {
    llbitmap::PercpuRef ref([&released] { released.fetch_add(1, std::memory_order_relaxed); });
    ref.get();
    ref.put();
    if (!ref.tryget_live()) {
      return fail("tryget_live failed on a live ref");
    }
    ref.put();
    ref.kill();
    if (!ref.is_dying()) {
      return fail("a killed ref is not dying");
    }
    // kill() switches to atomic mode asynchronously; the count then reaches zero.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!ref.is_zero()) {
      if (std::chrono::steady_clock::now() > deadline) {
        return fail("killed ref never reached zero");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  if (released.load(std::memory_order_relaxed) != 1) {
    return fail("release did not run once");
  }

  llbitmap::PageBarrier barrier;
  barrier.raise();
  barrier.release();
  if (!barrier.suspend(std::chrono::seconds(30))) {
    return fail("suspend of an idle page timed out");
  }
  barrier.resume();
  barrier.raise();
  barrier.release();

  std::puts("OK");
  return 0;
}
