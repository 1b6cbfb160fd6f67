// SPDX-License-Identifier: LGPL-2.1-or-later
//
// detail/sync_point.h: named sync points for interleaving tests.
//
// Layer 0. LLBM_SYNC_POINT("name") marks a place in the library where a test can run a
// callback on the thread that reaches it: block it until another thread has reached
// another point, record the order of events, or inject a decision. The points exist only
// in builds configured with LLBITMAP_SYNC_POINTS=ON (the debug and sanitizer presets); in
// other builds the macro expands to nothing and costs nothing.
//
// TestHooks holds switches that only sync-point builds read. mark_before_raise restores
// the order upstream shipped before ef4ca3d4bf09 (mark the chunks, then raise the
// barrier), so that a test can show its checker catches that bug. admit_before_durable
// makes the reactor driver admit a write as soon as its chunks are marked, before their
// Dirty is durable (write-ahead broken on purpose, for the same reason).
//
// Threads: set/clear from the test thread while no library thread can reach the points
// being changed; hit() from any thread. A callback must not set or clear points.
#pragma once

#include <atomic>
#include <functional>
#include <string>

namespace llbitmap::detail {

class SyncPoints {
 public:
  static void set(const std::string& name, std::function<void()> callback);
  static void clear(const std::string& name);
  static void clear_all();
  // Runs the callback registered for `name`, if any.
  static void hit(const char* name) noexcept;
};

struct TestHooks {
  std::atomic<bool> mark_before_raise{false};
  std::atomic<bool> admit_before_durable{false};
};
TestHooks& test_hooks() noexcept;

}  // namespace llbitmap::detail

#ifdef LLBM_SYNC_POINTS
#define LLBM_SYNC_POINT(name) ::llbitmap::detail::SyncPoints::hit(name)
#else
#define LLBM_SYNC_POINT(name) \
  do {                        \
  } while (0)
#endif
