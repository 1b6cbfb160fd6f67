// SPDX-License-Identifier: LGPL-2.1-or-later
//
// main.cc: `llbitmap-uring-mirror`, an io_uring RAID-1 engine over two files with a
// write-intent bitmap, and its load generator (engine.h). The main thread parses the
// command line, opens the legs and the bitmap, starts the reactors (--mode blocking: the
// worker threads of blocking.h), sleeps for the run, stops them and reports; with --resync it
// reopens the bitmap after a crash, copies leg0 to leg1 where the bitmap says so and compares the
// legs. Everything the main thread does happens before the reactors start or after they stopped (it
// may block).
#include <llbitmap/bitmap.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/reactor.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "blocking.h"
#include "classic_bitmap.h"
#include "cli.h"
#include "engine.h"
#include "flush_probe.h"
#include "json_writer.h"
#include "leg_io.h"
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

namespace llbitmap::uring_mirror {
namespace {

namespace fs = std::filesystem;
using tool::kExitError;
using tool::kExitOk;
using tool::kExitUsage;

// The exit status when io_uring cannot be used here (ctest's SKIP_RETURN_CODE).
constexpr int kExitNoUring = 77;

constexpr const char* kUsage = R"(Usage: llbitmap-uring-mirror --dir D --size BYTES [OPTIONS]
       llbitmap-uring-mirror --dir D --resync [--json]
       llbitmap-uring-mirror --dir D --probe-flush [--json]

An io_uring RAID-1 of two files (D/leg0, D/leg1) with a write-intent bitmap, driven by
an in-process load generator: every reactor thread (llbm-reactor, one per core, each
with its own io_uring) keeps --iodepth 4 KiB writes in flight, each to both legs.

Options:
  --dir D             the directory of leg0, leg1 and bitmap (created if missing)
  --size BYTES        the device size (suffixes K, M, G; a multiple of 4096); the legs
                      are created or grown to it
  --mode M            none | llbitmap | classic | blocking (default llbitmap)
                        none      no bitmap
                        llbitmap  ReactorBitmap (D/bitmap, created if missing)
                        classic   the old md bitmap (D/classic-bitmap): a write that
                                  sets a bit waits for the bitmap page's write and
                                  fdatasync before its data writes
                        blocking  no reactors: reactors x iodepth threads (llbm-worker)
                                  on the blocking Bitmap API (the same D/bitmap), each
                                  start_write, pwrite to both legs, end_write in turn
  --reactors N        reactor threads (default 1)
  --iodepth N         writes in flight per reactor (default 32)
  --seconds S         measured run time (default 5; decimals allowed)
  --warmup S          run this long first without counting (default 0): the writes
                      that dirty every chunk the workload touches, and their
                      persists, then stay out of the steady-state figures
  --workload W        uniform | hot | first | seq (default uniform)
                        uniform  random 4 KiB blocks over the device
                        hot      90 % of the writes in the first 1 % of the device
                        first    one write per chunk, each the chunk's first (the
                                 run ends early once every chunk was written)
                        seq      sequential 4 KiB blocks (each reactor its own slice)
  --daemon-sleep MS   the bitmap's cleaning interval (default: the file's; a new file
                      gets the library default); also the classic daemon's (default 5000)
  --barrier-idle MS   llbitmap: how long a page must be idle before it is cleaned
  --fail-meta-write N llbitmap: make the N-th bitmap write of the run fail (it goes to
                      a read-only descriptor: EBADF), to test the failure path; the
                      bitmap then fails, later writes are refused, the exit status is 1
  --unlinked-sync     llbitmap: take a persist round's sync from the bitmap only once
                      its writes completed (two trips through the ring per round)
                      instead of linked behind them (ReactorOptions::ordered_sync)
  --serial-rounds     llbitmap: begin a persist round only once the last one's sync
                      completed, instead of as soon as its writes completed
                      (ReactorOptions::pipelined_rounds)
  --ring-entries N    llbitmap: give each reactor's ring N submission entries (2 to
                      4096) instead of room for every write in flight; with fewer than
                      a round's linked chain needs, the engine holds the round's sync
                      back, unlinked, until the round's writes are back (syncs_held),
                      the path a kernel that takes fewer entries than asked would take
  --busy-poll         the reactors never sleep: each submits and reaps its ring in a
                      loop, as an SPDK reactor polls (a core each, busy even when
                      idle); without it a reactor sleeps in io_uring_enter until a
                      completion or its eventfd wakes it. Ignored by blocking
  --json              print one JSON object (the "running" line then goes to stderr)
  --resync            reopen D/bitmap after a crash, copy leg0 to leg1 for every chunk
                      it says needs it, compare the legs; exit 0 only if identical
  --probe-flush       measure what the medium takes for one 4 KiB write + fdatasync of
                      a file in D (200 times each way, alternately): by syscalls, and
                      through an io_uring with the fsync linked behind the write; print
                      the p50 and p99 of each (JSON: syscall_p50_us, ring_p50_us, ...)

Once every reactor runs, a line starting with "running" is printed (stdout; stderr
with --json). Exit status: 0 success, 1 failure, 2 bad command line, 77 io_uring not
permitted here.
)";

struct Config {
  fs::path dir;
  std::uint64_t size = 0;
  Mode mode = Mode::kLlbitmap;
  unsigned reactors = 1;
  unsigned iodepth = 32;
  double seconds = 5;
  double warmup = 0;
  Workload workload = Workload::kUniform;
  std::chrono::milliseconds daemon_sleep{0};  // 0: not given
  std::chrono::milliseconds barrier_idle{0};
  bool json = false;
  bool resync = false;
  bool unlinked_sync = false;
  bool serial_rounds = false;
  bool busy_poll = false;
  unsigned ring_entries = 0;  // 0: the default size
  bool probe_flush = false;
  std::uint64_t fail_meta_write = 0;  // 0: off
};

int fail(const std::string& what) {
  std::fprintf(stderr, "llbitmap-uring-mirror: %s\n", what.c_str());
  return kExitError;
}
int fail(const std::string& what, std::error_code ec) {
  return fail(what + ": " + ec.message());
}

std::error_code errno_code() {
  return {errno, std::generic_category()};
}

// --- files

struct Files {
  int leg[2] = {-1, -1};
  int bitmap = -1;
  int bitmap_ro = -1;  // --fail-meta-write
  int classic = -1;
  bool direct = true;  // both legs opened with O_DIRECT
  Files() = default;
  Files(const Files&) = delete;
  Files& operator=(const Files&) = delete;
  ~Files() {
    for (const int fd : {leg[0], leg[1], bitmap, bitmap_ro, classic})
      if (fd >= 0) ::close(fd);
  }
};

// Opens (creating if missing) a leg with O_DIRECT where the file system takes it.
std::error_code open_leg(const fs::path& path, int& fd, bool& direct) {
  fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_DIRECT, 0644);
  if (fd < 0 && errno == EINVAL) {  // no O_DIRECT here (e.g. an older tmpfs)
    direct = false;
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  }
  return fd < 0 ? errno_code() : std::error_code();
}

// Grows the file to `size` if it is shorter (sparse).
std::error_code grow(int fd, std::uint64_t size) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_code();
  if (static_cast<std::uint64_t>(st.st_size) < size &&
      ::ftruncate(fd, static_cast<off_t>(size)) != 0)
    return errno_code();
  return {};
}

std::error_code open_legs(const Config& cfg, Files& f) {
  for (int i = 0; i < 2; ++i) {
    bool direct = true;
    if (auto ec = open_leg(cfg.dir / ("leg" + std::to_string(i)), f.leg[i], direct)) return ec;
    f.direct = f.direct && direct;
    if (cfg.size != 0)
      if (auto ec = grow(f.leg[i], cfg.size)) return ec;
  }
  return {};
}

// --- the bitmap on the main thread (before the reactors start, after they stopped)

std::error_code read_file(int fd, std::vector<std::byte>& out) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_code();
  out.resize(static_cast<std::size_t>(st.st_size));
  return mirror::pread_all(fd, out.data(), out.size(), 0);
}

// Writes a new file durably: a temporary file, fdatasync, rename, directory fsync.
std::error_code write_new_file(const fs::path& path, std::span<const std::byte> bytes) {
  const fs::path tmp = path.string() + ".new";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_code();
  std::error_code ec = mirror::pwrite_all(fd, bytes.data(), bytes.size(), 0);
  if (!ec) ec = mirror::sync_fd(fd);
  ::close(fd);
  if (!ec && ::rename(tmp.c_str(), path.c_str()) != 0) ec = errno_code();
  if (!ec) ec = mirror::sync_parent_dir(path);
  return ec;
}

// Performs every MetaIo the bitmap hands out, synchronously, and steps it once.
void drive_here(ReactorBitmap& b, const Files& f) {
  MetaIo io;
  while (b.next_io(io)) {
    std::error_code ec;
    switch (io.kind) {
      case MetaIo::Kind::kWrite:
        ec = mirror::pwrite_all(f.bitmap, io.bytes.data(), io.bytes.size(), io.offset);
        break;
      case MetaIo::Kind::kSync:
        ec = mirror::sync_fd(f.bitmap);
        break;
      case MetaIo::Kind::kDataFlush:
        ec = mirror::sync_fd(f.leg[0]);
        if (!ec) ec = mirror::sync_fd(f.leg[1]);
        break;
    }
    b.complete(io.id, ec);
  }
  b.step();
}

// Drives the bitmap until `done` holds (false after 60 s without it).
template <typename Done>
bool drive_until(ReactorBitmap& b, const Files& f, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    drive_here(b, f);
    if (done()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool closed(const ReactorBitmap& b, std::error_code& result) {
  return b.close_state(result) == ReactorBitmap::CloseState::kClosed;
}

// Opens D/bitmap (creating it with ReactorBitmap::format when missing) and drives it
// until writes can be admitted.
std::unique_ptr<ReactorBitmap> open_bitmap(const Config& cfg, Files& f, bool create,
                                           std::string& error) {
  const fs::path path = cfg.dir / "bitmap";
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (!create) {
      error = path.string() + ": no bitmap file";
      return nullptr;
    }
    BitmapOptions opts;
    opts.device_bytes = cfg.size;
    if (cfg.daemon_sleep.count() != 0) opts.daemon_sleep = cfg.daemon_sleep;
    if (cfg.barrier_idle.count() != 0) opts.barrier_idle = cfg.barrier_idle;
    const std::vector<std::byte> bytes = ReactorBitmap::format(opts, ec);
    if (!ec) ec = write_new_file(path, bytes);
    if (ec) {
      error = "creating " + path.string() + ": " + ec.message();
      return nullptr;
    }
  }
  f.bitmap = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  std::vector<std::byte> bytes;
  ec = f.bitmap < 0 ? errno_code() : read_file(f.bitmap, bytes);
  ReactorOptions ropts;
  ropts.data_flush =
      true;  // end_write once the leg writes completed; kDataFlush makes them durable
  // A round's sync is linked behind its writes on the reactor's ring (engine.cc).
  ropts.ordered_sync = !cfg.unlinked_sync;
  // The next round's writes go while a round's sync is out (several syncs in flight).
  ropts.pipelined_rounds = !cfg.serial_rounds;
  std::unique_ptr<ReactorBitmap> b;
  if (!ec) b = ReactorBitmap::open(bytes, ropts, ec);
  if (ec) {
    error = path.string() + ": " + ec.message();
    return nullptr;
  }
  if (cfg.size != 0 && b->device_bytes() != cfg.size) {
    error = path.string() + ": made for " + std::to_string(b->device_bytes()) +
            " bytes, not --size " + std::to_string(cfg.size);
    // Never written: it may be destroyed open.
    return nullptr;
  }
  if (cfg.daemon_sleep.count() != 0) ec = b->set_daemon_sleep(cfg.daemon_sleep);
  if (!ec && cfg.barrier_idle.count() != 0) ec = b->set_barrier_idle(cfg.barrier_idle);
  if (ec) {
    error = "bitmap timings: " + ec.message();
    return nullptr;
  }
  if (!drive_until(*b, f, [&] { return b->ready() || b->failed(); }) || b->failed()) {
    error = path.string() + ": the recovered states could not be made durable";
    std::error_code r;
    b->begin_close();
    drive_until(*b, f, [&] { return closed(*b, r); });
    return nullptr;
  }
  return b;
}

// --- the run

std::error_code probe_uring() {
  io_uring ring{};
  const int r = io_uring_queue_init(8, &ring, 0);
  if (r < 0) return {-r, std::generic_category()};
  io_uring_queue_exit(&ring);
  return {};
}

int run_load(const Config& cfg) {
  if (cfg.size == 0) return tool::usage_error("--size is required");
  std::error_code ec;
  fs::create_directories(cfg.dir, ec);
  if (ec) return fail(cfg.dir.string(), ec);
  Files f;
  if ((ec = open_legs(cfg, f))) return fail("opening the legs", ec);

  Shared shared;
  shared.mode = cfg.mode;
  shared.workload = cfg.workload;
  shared.reactors = cfg.reactors;
  shared.iodepth = cfg.iodepth;
  shared.busy_poll = cfg.busy_poll;
  shared.ring_entries = cfg.ring_entries;
  shared.device_bytes = cfg.size;
  shared.leg_fd[0] = f.leg[0];
  shared.leg_fd[1] = f.leg[1];
  shared.writing.store(cfg.reactors, std::memory_order_relaxed);  // before the threads start
  if (cfg.daemon_sleep.count() != 0) shared.classic_daemon_sleep = cfg.daemon_sleep;
  GeometryOptions gopts;
  gopts.device_bytes = cfg.size;
  const std::optional<Geometry> geometry = Geometry::compute(gopts, ec);
  if (!geometry) return fail("geometry for --size", ec);
  shared.chunk_bytes = geometry->chunk_bytes();

  std::unique_ptr<bench::ClassicBitmap> classic;
  std::unique_ptr<BlockingMirror> blocking;
  std::unique_ptr<ReactorBitmap> bitmap;
  switch (cfg.mode) {
    case Mode::kNone:
      break;
    case Mode::kClassic: {
      classic = std::make_unique<bench::ClassicBitmap>(cfg.size, shared.chunk_bytes);
      const fs::path path = cfg.dir / "classic-bitmap";
      f.classic = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (f.classic < 0) return fail(path.string(), errno_code());
      const std::uint64_t pages = (bench::ClassicBitmap::kSuperblockBits + classic->chunks() +
                                   bench::ClassicBitmap::kFilePageBits - 1) /
                                  bench::ClassicBitmap::kFilePageBits;
      if ((ec = grow(f.classic, pages * kBlock))) return fail(path.string(), ec);
      shared.classic = classic.get();
      shared.classic_peers = std::make_unique<ClassicPeer[]>(cfg.reactors);
      shared.classic_fd = f.classic;
      break;
    }
    case Mode::kLlbitmap: {
      std::string error;
      bitmap = open_bitmap(cfg, f, /*create=*/true, error);
      if (!bitmap) return fail(error);
      shared.bitmap = bitmap.get();
      shared.bitmap_fd = f.bitmap;
      if (cfg.fail_meta_write != 0) {
        f.bitmap_ro = ::open((cfg.dir / "bitmap").c_str(), O_RDONLY | O_CLOEXEC);
        if (f.bitmap_ro < 0) return fail("opening the bitmap read-only", errno_code());
        shared.bitmap_ro_fd = f.bitmap_ro;
        shared.fail_meta_write = cfg.fail_meta_write;
      }
      shared.chunk_bytes = bitmap->chunk_bytes();
      break;
    }
    case Mode::kBlocking: {
      std::string error;
      blocking = BlockingMirror::open(shared, cfg.dir / "bitmap", cfg.daemon_sleep,
                                      cfg.barrier_idle, error);
      if (!blocking) return fail(error);
      shared.chunk_bytes = blocking->chunk_bytes();
      break;
    }
  }

  std::vector<ReactorResult> results;
  std::vector<std::thread> threads;
  if (blocking) {
    blocking->start(results);  // returns once every worker has started
  } else {
    results.resize(cfg.reactors);
    // One at a time: each reactor prepares its thread (ReactorQueue's constructor
    // registers it with the library) before the next one starts, so no two
    // registrations meet on a lock. acquire: pairs with each reactor's release increment
    // (its tid is written before).
    for (unsigned i = 0; i < cfg.reactors; ++i) {
      threads.emplace_back([&shared, &results, i] { run_reactor(shared, i, results[i]); });
      for (unsigned v; (v = shared.started.load(std::memory_order_acquire)) <= i;)
        shared.started.wait(v, std::memory_order_acquire);  // each increment is notified
    }
  }
  // release: pairs with the reactors' and the workers' acquire loads; the workers sleep
  // in go.wait until the notify.
  // relaxed: published by the release store of go below.
  shared.measuring.store(cfg.warmup == 0, std::memory_order_relaxed);
  shared.go.store(true, std::memory_order_release);
  shared.go.notify_all();
  std::FILE* progress = cfg.json ? stderr : stdout;
  std::fprintf(progress, "running pid=%d %s=", static_cast<int>(::getpid()),
               blocking ? "worker_tids" : "reactor_tids");
  for (std::size_t i = 0; i < results.size(); ++i)
    std::fprintf(progress, "%s%d", i ? "," : "", static_cast<int>(results[i].tid));
  std::fprintf(progress, "\n");
  std::fflush(progress);
  if (cfg.warmup > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg.warmup));
    shared.measuring.store(true, std::memory_order_release);  // pairs with their acquire
  }
  // The run's time, cut short when kFirst has touched every chunk (relaxed: a count).
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(cfg.seconds));
  while (std::chrono::steady_clock::now() < deadline &&
         shared.exhausted.load(std::memory_order_relaxed) < results.size())
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // release: pairs with the reactors' and the workers' acquire loads.
  shared.stop.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  if (blocking) blocking->join();

  int rc = kExitOk;
  Histogram latency;
  std::uint64_t ops = 0, pending = 0, meta_ios = 0, errors = 0, syncs_cancelled = 0,
                syncs_restarted = 0, syncs_held = 0;
  double iops = 0, seconds = 0;
  for (const auto& r : results) {
    if (!r.error.empty()) {
      std::fprintf(stderr, "llbitmap-uring-mirror: %s: %s\n", blocking ? "worker" : "reactor",
                   r.error.c_str());
      rc = kExitError;
    }
    latency.merge(r.latency);
    ops += r.ops;
    pending += r.pending;
    meta_ios += r.meta_ios;
    syncs_cancelled += r.syncs_cancelled;
    syncs_restarted += r.syncs_restarted;
    syncs_held += r.syncs_held;
    errors += r.errors;
    if (r.seconds > 0) iops += static_cast<double>(r.ops) / r.seconds;
    seconds = std::max(seconds, r.seconds);
  }
  if (errors != 0) rc = kExitError;

  BlockingStats blocking_stats;
  if (blocking) {
    if (const std::error_code result = blocking->close()) {
      std::fprintf(stderr, "llbitmap-uring-mirror: closing the bitmap: %s\n",
                   result.message().c_str());
      rc = kExitError;
    }
    blocking_stats = blocking->stats();
  }
  ReactorStats stats{};
  if (bitmap) {
    std::error_code result;
    if (!closed(*bitmap, result)) {  // a reactor could not run: finish the close here
      bitmap->begin_close();
      if (!drive_until(*bitmap, f, [&] { return closed(*bitmap, result); }))
        return fail("the bitmap did not close");
    }
    if (result) {
      std::fprintf(stderr, "llbitmap-uring-mirror: closing the bitmap: %s\n",
                   result.message().c_str());
      rc = kExitError;
    }
    stats = bitmap->stats();
  }

  const double us = 1e-3;
  if (cfg.json) {
    tool::JsonWriter j(stdout);
    j.begin_object();
    j.member("mode", mode_name(cfg.mode));
    j.member("workload", workload_name(cfg.workload));
    j.member("reactors", std::uint64_t{cfg.reactors});
    j.member("iodepth", std::uint64_t{cfg.iodepth});
    j.key("seconds");
    j.value_fixed(seconds, 3);
    j.key("warmup_seconds");
    j.value_fixed(cfg.warmup, 3);
    j.member("ops", ops);
    j.key("iops");
    j.value_fixed(iops, 1);
    j.key("lat_p50_us");
    j.value_fixed(static_cast<double>(latency.quantile(0.5)) * us, 1);
    j.key("lat_p99_us");
    j.value_fixed(static_cast<double>(latency.quantile(0.99)) * us, 1);
    j.key("lat_p999_us");
    j.value_fixed(static_cast<double>(latency.quantile(0.999)) * us, 1);
    j.member("errors", errors);
    j.member("o_direct", f.direct);
    j.member("busy_poll", cfg.busy_poll && cfg.mode != Mode::kBlocking);  // blocking: no reactors
    j.member("device_bytes", cfg.size);
    j.member("chunk_bytes", shared.chunk_bytes);
    if (cfg.mode == Mode::kLlbitmap) {
      j.member("pending_admissions", pending);
      j.member("meta_ios", meta_ios);
      j.member("linked_sync", !cfg.unlinked_sync);
      j.member("pipelined_rounds", !cfg.serial_rounds);
      j.member("syncs_cancelled", syncs_cancelled);
      j.member("syncs_restarted", syncs_restarted);
      j.member("ring_entries", std::uint64_t{cfg.ring_entries});
      j.member("syncs_held", syncs_held);
      j.member("bitmap_failed", bitmap->failed());
      j.member("persist_rounds", stats.persist_rounds);
      j.member("data_flushes", stats.data_flushes);
      j.member("pages_cleaned", stats.pages_cleaned);
    }
    if (cfg.mode == Mode::kBlocking) {
      j.member("workers", std::uint64_t{blocking->workers()});
      j.member("persist_rounds", blocking_stats.persist_rounds);
      j.member("persist_waits", blocking_stats.persist_waits);
      j.member("pages_cleaned", blocking_stats.pages_cleaned);
    }
    j.end_object();
    j.finish();
  } else {
    std::printf("mode %s, workload %s, %u reactor(s), iodepth %u, %.2f s, %s\n",
                mode_name(cfg.mode), workload_name(cfg.workload), cfg.reactors, cfg.iodepth,
                seconds, f.direct ? "O_DIRECT" : "buffered");
    if (blocking)
      std::printf("  %u worker threads on the blocking Bitmap API\n", blocking->workers());
    std::printf("  %llu writes, %.0f IOPS\n", static_cast<unsigned long long>(ops), iops);
    std::printf("  latency p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n",
                static_cast<double>(latency.quantile(0.5)) * us,
                static_cast<double>(latency.quantile(0.99)) * us,
                static_cast<double>(latency.quantile(0.999)) * us);
    if (cfg.mode == Mode::kLlbitmap)
      std::printf("  %llu admissions pending, %llu metadata IOs\n",
                  static_cast<unsigned long long>(pending),
                  static_cast<unsigned long long>(meta_ios));
    if (blocking)
      std::printf("  %llu bitmap persists, %llu start_write waits for a persist\n",
                  static_cast<unsigned long long>(blocking_stats.persist_rounds),
                  static_cast<unsigned long long>(blocking_stats.persist_waits));
    if (errors != 0) std::printf("  %llu errors\n", static_cast<unsigned long long>(errors));
  }
  return rc;
}

// --- resync after a crash

int run_resync(const Config& cfg) {
  Files f;
  std::error_code ec;
  if ((ec = open_legs(cfg, f))) return fail("opening the legs", ec);
  std::string error;
  std::unique_ptr<ReactorBitmap> b = open_bitmap(cfg, f, /*create=*/false, error);
  if (!b) return fail(error);
  const std::uint64_t chunk = b->chunk_bytes();
  const std::uint64_t size = b->device_bytes();
  const auto runs = b->needs_sync();
  std::uint64_t needed = 0;
  for (const auto& [off, len] : runs) needed += (len + chunk - 1) / chunk;

  auto* buf = static_cast<std::byte*>(std::aligned_alloc(kBlock, chunk));
  if (buf == nullptr) throw std::bad_alloc();
  const std::unique_ptr<std::byte, decltype(&std::free)> hold(buf, &std::free);
  std::uint64_t resynced = 0, copied = 0;
  for (const auto& [first, len] : runs) {
    for (std::uint64_t off = first; off < first + len; off += chunk) {
      if (!b->start_sync(off)) continue;
      const std::uint64_t n = std::min(chunk, size - off);
      ec = mirror::pread_all(f.leg[0], buf, n, off);
      if (!ec) ec = mirror::pwrite_all(f.leg[1], buf, n, off);
      if (ec) {
        b->abort_sync(off);
        break;
      }
      b->end_sync(off);  // Dirty: the close's data flush makes leg1 durable before Clean
      ++resynced;
      copied += n;
      drive_here(*b, f);
    }
    if (ec) break;
  }
  std::error_code closed_result;
  b->begin_close();
  if (!drive_until(*b, f, [&] { return closed(*b, closed_result); }))
    return fail("the bitmap did not close");
  if (ec) return fail("copying leg0 to leg1", ec);
  if (closed_result) return fail("closing the bitmap", closed_result);

  mirror::CompareResult cmp;
  if ((ec = mirror::compare_legs(cfg.dir / "leg0", cfg.dir / "leg1", size, cmp)))
    return fail("comparing the legs", ec);
  if (cfg.json) {
    tool::JsonWriter j(stdout);
    j.begin_object();
    j.member("chunks", b->chunks());
    j.member("chunks_needing_sync", needed);
    j.member("chunks_resynced", resynced);
    j.member("bytes_copied", copied);
    j.member("bytes_compared", cmp.bytes_compared);
    j.member("identical", cmp.identical);
    if (!cmp.identical) j.member("first_difference", cmp.first_difference);
    j.end_object();
    j.finish();
  } else {
    std::printf("resync: %llu of %llu chunks resynced (%s copied)\n",
                static_cast<unsigned long long>(resynced),
                static_cast<unsigned long long>(b->chunks()), tool::format_size(copied).c_str());
    if (cmp.identical)
      std::printf("legs identical (%s compared)\n", tool::format_size(cmp.bytes_compared).c_str());
    else
      std::printf("legs DIFFER at byte %llu\n",
                  static_cast<unsigned long long>(cmp.first_difference));
  }
  return cmp.identical ? kExitOk : kExitError;
}

// --- the medium's own write + flush

int run_probe(const Config& cfg) {
  std::error_code ec;
  fs::create_directories(cfg.dir, ec);
  if (ec) return fail(cfg.dir.string(), ec);
  FlushProbe p;
  constexpr unsigned kSamples = 200;
  if ((ec = probe_flush((cfg.dir / "flush-probe").string(), kSamples, p)))
    return fail("--probe-flush", ec);
  if (cfg.json) {
    tool::JsonWriter j(stdout);
    j.begin_object();
    j.member("samples", std::uint64_t{p.samples});
    j.key("syscall_p50_us");
    j.value_fixed(p.syscall_p50_us, 1);
    j.key("syscall_p99_us");
    j.value_fixed(p.syscall_p99_us, 1);
    j.key("ring_p50_us");
    j.value_fixed(p.ring_p50_us, 1);
    j.key("ring_p99_us");
    j.value_fixed(p.ring_p99_us, 1);
    j.end_object();
    j.finish();
  } else {
    std::printf("4 KiB write + fdatasync of %s, %u samples each way\n",
                (cfg.dir / "flush-probe").c_str(), p.samples);
    std::printf("  syscalls: p50 %.1f us, p99 %.1f us\n", p.syscall_p50_us, p.syscall_p99_us);
    std::printf("  io_uring (fsync linked): p50 %.1f us, p99 %.1f us\n", p.ring_p50_us,
                p.ring_p99_us);
  }
  return kExitOk;
}

// --- command line

std::optional<unsigned> parse_count(const std::string& s) {
  const auto v = tool::parse_uint(s);
  if (!v || *v == 0 || *v > 4096) return std::nullopt;
  return static_cast<unsigned>(*v);
}

int run(int argc, char** argv) {
  tool::g_program = "llbitmap-uring-mirror";
  Config cfg;
  tool::ArgCursor args(std::span<char* const>(argv + 1, static_cast<std::size_t>(argc - 1)));
  std::string v;
  while (!args.done()) {
    bool missing = false;
    const std::string arg(args.peek());
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kUsage, stdout);
      return kExitOk;
    } else if (args.flag("--json")) {
      cfg.json = true;
    } else if (args.flag("--resync")) {
      cfg.resync = true;
    } else if (args.option("--fail-meta-write", v, missing)) {
      const auto n = tool::parse_uint(v);
      if (!missing && (!n || *n == 0))
        return tool::usage_error("--fail-meta-write: a count from 1 expected");
      if (!missing) cfg.fail_meta_write = *n;
    } else if (args.flag("--unlinked-sync")) {
      cfg.unlinked_sync = true;
    } else if (args.flag("--serial-rounds")) {
      cfg.serial_rounds = true;
    } else if (args.flag("--busy-poll")) {
      cfg.busy_poll = true;
    } else if (args.flag("--probe-flush")) {
      cfg.probe_flush = true;
    } else if (args.option("--ring-entries", v, missing)) {
      const auto n = parse_count(v);
      if (!missing && (!n || *n < 2))
        return tool::usage_error("--ring-entries: a count from 2 to 4096 expected");
      if (!missing) cfg.ring_entries = *n;
    } else if (args.option("--dir", v, missing)) {
      if (!missing) cfg.dir = v;
    } else if (args.option("--size", v, missing)) {
      const auto s = tool::parse_size(v);
      if (!missing && (!s || *s == 0 || *s % kBlock != 0))
        return tool::usage_error("--size: a positive multiple of 4096 with K/M/G expected");
      if (!missing) cfg.size = *s;
    } else if (args.option("--mode", v, missing)) {
      if (v == "none")
        cfg.mode = Mode::kNone;
      else if (v == "llbitmap")
        cfg.mode = Mode::kLlbitmap;
      else if (v == "classic")
        cfg.mode = Mode::kClassic;
      else if (v == "blocking")
        cfg.mode = Mode::kBlocking;
      else if (!missing)
        return tool::usage_error("--mode: none, llbitmap, classic or blocking expected");
    } else if (args.option("--workload", v, missing)) {
      if (v == "uniform")
        cfg.workload = Workload::kUniform;
      else if (v == "hot")
        cfg.workload = Workload::kHot;
      else if (v == "first")
        cfg.workload = Workload::kFirst;
      else if (v == "seq")
        cfg.workload = Workload::kSeq;
      else if (!missing)
        return tool::usage_error("--workload: uniform, hot, first or seq expected");
    } else if (args.option("--reactors", v, missing) || args.option("--iodepth", v, missing)) {
      const auto n = parse_count(v);
      if (!missing && !n) return tool::usage_error(arg + ": a count from 1 to 4096 expected");
      if (!missing) (arg.rfind("--reactors", 0) == 0 ? cfg.reactors : cfg.iodepth) = *n;
    } else if (args.option("--seconds", v, missing) || args.option("--warmup", v, missing)) {
      const bool warmup = arg.rfind("--warmup", 0) == 0;
      char* end = nullptr;
      const double s = std::strtod(v.c_str(), &end);
      if (!missing &&
          (end == v.c_str() || *end != '\0' || !(s > 0 || (warmup && s == 0)) || s > 1e6))
        return tool::usage_error(arg + ": a positive number expected");
      (warmup ? cfg.warmup : cfg.seconds) = s;
    } else if (args.option("--daemon-sleep", v, missing) ||
               args.option("--barrier-idle", v, missing)) {
      const auto n = tool::parse_uint(v);
      if (!missing && (!n || *n == 0))
        return tool::usage_error(arg + ": milliseconds (> 0) expected");
      if (!missing)
        (arg.rfind("--daemon-sleep", 0) == 0 ? cfg.daemon_sleep : cfg.barrier_idle) =
            std::chrono::milliseconds(*n);
    } else {
      return tool::usage_error("unknown argument '" + arg + "'");
    }
    if (missing) return tool::usage_error(arg + ": a value is required");
  }
  if (cfg.dir.empty()) return tool::usage_error("--dir is required");
  // The other modes link chains the engine does not split: they keep the default size.
  if (cfg.ring_entries != 0 && cfg.mode != Mode::kLlbitmap)
    return tool::usage_error("--ring-entries: only with --mode llbitmap");
  if (const std::error_code ec = probe_uring()) {
    const bool refused = ec == std::errc::operation_not_permitted ||
                         ec == std::errc::function_not_supported ||
                         ec == std::errc::permission_denied;
    std::fprintf(stderr, "llbitmap-uring-mirror: io_uring is %s here (%s)\n",
                 refused ? "not permitted" : "not usable", ec.message().c_str());
    return refused ? kExitNoUring : kExitError;
  }
  if (cfg.probe_flush) return run_probe(cfg);
  return cfg.resync ? run_resync(cfg) : run_load(cfg);
}

}  // namespace
}  // namespace llbitmap::uring_mirror

int main(int argc, char** argv) {
  return llbitmap::tool::guarded_main(&llbitmap::uring_mirror::run, argc, argv);
}
