// SPDX-License-Identifier: LGPL-2.1-or-later
//
// engine.h: the reactors of llbitmap-uring-mirror, an io_uring RAID-1 of two files (legs)
// with a write-intent bitmap, and the load they generate.
//
// Every reactor is one thread (named llbm-reactor, pinned to a core) with its own
// io_uring. It keeps `iodepth` 4 KiB writes in flight for the run's duration; each write
// goes to both legs (two SQEs) and completes when both did. Its latency, from the moment
// the reactor picks the write to the second leg's completion (admission wait included),
// goes into the reactor's histogram.
//
// Modes (Mode):
//   kNone      the legs only, no bitmap.
//   kLlbitmap  ReactorBitmap (include/llbitmap/reactor.h): each reactor has a
//              ReactorQueue, asks it to admit every write, polls it, hands the bitmap's
//              metadata IO (MetaIo) to its own ring (a round's writes linked to its
//              sync: ReactorOptions::ordered_sync, unless --unlinked-sync; the next
//              round's writes while a round's sync is out: ReactorOptions::
//              pipelined_rounds, unless --serial-rounds) and steps the cleaning pass; it
//              sleeps only in io_uring_enter, with the queue's eventfd polled on the ring
//              (with --busy-poll it never sleeps).
//   kClassic   the old md bitmap (mirror/classic_bitmap.h): one lock over all chunks, and
//              a write that set a bit waits for the bitmap page's write and fdatasync
//              (linked on the ring) before its data writes go, as md's raid1 unplugs
//              its bitmap before it submits the writes. Each reactor unplugs on its own,
//              so a write also waits for the other reactors' flushes that may carry its
//              bit (ClassicPeer), woken by their completion through its eventfd.
//   kBlocking  not a reactor mode: reactors x iodepth threads on the blocking Bitmap API
//              (blocking.h); it shares Shared, ReactorResult and the offsets
//              (workload.h) with the reactors, and run_reactor refuses it.
//
// Threads: run_reactor runs on the reactor's own thread; the Shared state is read by
// all of them, and its atomics are the only state they write together.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "histogram.h"
#include <sys/types.h>

namespace llbitmap {
class ReactorBitmap;
namespace bench {
class ClassicBitmap;
}
}  // namespace llbitmap

namespace llbitmap::uring_mirror {

enum class Mode { kNone, kLlbitmap, kClassic, kBlocking };
enum class Workload { kUniform, kHot, kFirst, kSeq };

const char* mode_name(Mode m) noexcept;
const char* workload_name(Workload w) noexcept;

inline constexpr std::uint64_t kBlock = 4096;  // every data write is one 4 KiB block

// kClassic: one reactor's bitmap flushes as the other reactors see them. Every unplug
// takes a ticket (started); a ticket is done once the flush that carries the page marks
// taken at that unplug has completed (done: the highest such ticket). A write waits for
// the tickets the other reactors had taken when it unplugged, since one of them may have
// taken its bit's page. waiting: the reactor has writes parked on another's tickets; a
// reactor whose flush completes then writes its eventfd (efd).
struct ClassicPeer {
  std::atomic<std::uint64_t> started{0};
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> waiting{false};
  std::atomic<int> efd{-1};
};

// What the reactors share. Set up by the main thread before they start.
struct Shared {
  Mode mode = Mode::kNone;
  Workload workload = Workload::kUniform;
  unsigned reactors = 1;
  unsigned iodepth = 32;
  // --busy-poll: a reactor never sleeps in io_uring_enter; it submits and reaps in a loop,
  // as an SPDK reactor polls (one core per reactor, busy even when idle).
  bool busy_poll = false;
  // kLlbitmap, --ring-entries N: each ring's submission queue has N entries instead of
  // room for every write in flight, so a persist round's linked chain may not fit and its
  // sync is held back, unlinked, until the round's writes are back. 0: the default size.
  unsigned ring_entries = 0;
  std::uint64_t device_bytes = 0;
  std::uint64_t chunk_bytes = 0;
  int leg_fd[2] = {-1, -1};
  int bitmap_fd = -1;  // kLlbitmap: the bitmap file
  // kLlbitmap, --fail-meta-write N: the N-th bitmap write the reactors submit (counted over
  // all of them, from 1) goes to bitmap_ro_fd, the file opened read-only, and fails with
  // EBADF: the failure path of a linked round, end to end. 0: off.
  std::uint64_t fail_meta_write = 0;
  int bitmap_ro_fd = -1;
  int classic_fd = -1;                                   // kClassic: the classic bitmap's file
  ReactorBitmap* bitmap = nullptr;                       // kLlbitmap
  bench::ClassicBitmap* classic = nullptr;               // kClassic
  std::unique_ptr<ClassicPeer[]> classic_peers;          // kClassic: one per reactor
  std::chrono::milliseconds classic_daemon_sleep{5000};  // md's default daemon_sleep

  // Set by the main thread at the end of the run (release; the reactors' acquire loads
  // pair with it, so they see nothing newer than what was set up before the start).
  std::atomic<bool> stop{false};
  // Reactors that have started their load (the main thread waits for all of them).
  std::atomic<unsigned> started{0};
  // Set by the main thread once every reactor has started (and prepared its thread); the
  // reactors issue nothing before it. The main thread notifies it after the store
  // (kBlocking's workers sleep in go.wait; the reactors spin).
  std::atomic<bool> go{false};
  // False during --warmup: writes run but are not counted; the first completion that sees
  // it true starts a thread's measured time (release by the main thread, acquire here).
  std::atomic<bool> measuring{true};
  // Reactors whose writes have not all ended yet; the one that brings it to zero asks
  // the bitmap to close (kLlbitmap).
  std::atomic<unsigned> writing{0};
  // kFirst: reactors (kBlocking: workers) that ran out of chunks to touch (the run ends
  // when all have).
  std::atomic<unsigned> exhausted{0};
  // kFirst: the next chunk to touch (relaxed: a ticket counter, nothing is published
  // through it).
  std::atomic<std::uint64_t> next_chunk{0};
  // kLlbitmap: bitmap writes submitted so far (relaxed: a ticket counter, as next_chunk).
  std::atomic<std::uint64_t> meta_writes{0};
};

// What one reactor (kBlocking: one worker thread) reports at its end.
struct ReactorResult {
  Histogram latency;
  std::uint64_t ops = 0;       // writes completed before the stop
  double seconds = 0;          // from its start to the stop it saw
  std::uint64_t pending = 0;   // kLlbitmap: admissions that were kPending
  std::uint64_t meta_ios = 0;  // kLlbitmap: MetaIo requests it performed
  // kLlbitmap: linked syncs the kernel cancelled (a write before them failed or was
  // short), and those of them the reactor started again (after a short write).
  std::uint64_t syncs_cancelled = 0;
  std::uint64_t syncs_restarted = 0;
  // kLlbitmap: after_writes syncs held back, unlinked, because the ring had no room for
  // their whole chain (submitted once this reactor's bitmap writes were back).
  std::uint64_t syncs_held = 0;
  std::uint64_t errors = 0;  // failed leg writes and refused admissions
  pid_t tid = 0;
  std::string error;  // set when the reactor could not run
};

// The body of reactor thread `index` (0-based).
void run_reactor(Shared& shared, unsigned index, ReactorResult& result);

}  // namespace llbitmap::uring_mirror
