// SPDX-License-Identifier: LGPL-2.1-or-later
//
// bitmap_internal.h: the per-block bookkeeping shared by bitmap.cc (the write path),
// bitmap_persist.cc (write-ahead persistence) and bitmap_daemon.cc (cleaning).
//
// Every change of a state byte happens under its block's stripe lock and bumps the
// block's change number *before* the byte is stored (release). So a writer that loads a
// byte (acquire) and finds it already Dirty also sees a change number that tells it
// whether that Dirty is durable yet: durable_seq >= dirty_seq. The persister reads the
// change number and copies the block under the same lock, so its snapshot contains
// every change up to the number it records as durable.
#pragma once

#include <llbitmap/bitmap.h>

#include <atomic>
#include <cstdint>

namespace llbitmap {

struct Bitmap::BlockCtl {
  std::atomic<std::uint64_t> dirty_seq{0};    // change number of the last change
  std::atomic<std::uint64_t> durable_seq{0};  // change number the file has synced
  bool queued = false;                        // in pending_blocks_ (guarded by persist_mu_)
};

// A block and the change number that must be durable.
struct Bitmap::Target {
  std::uint64_t block;
  std::uint64_t seq;
};

}  // namespace llbitmap
