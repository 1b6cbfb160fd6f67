// SPDX-License-Identifier: LGPL-2.1-or-later
//
// mirror.cc: Mirror, a RAID-1 of two legs whose write-intent bitmap is an llbitmap
// Bitmap (see mirror.h for the API).
//
// Locking. The device is cut into chunks (the bitmap's chunk in kLlbitmap mode). 256
// stripes cover them, chunk c -> stripe c % 256; a stripe is a reader-writer exclusion
// between the writes and the resync copy:
//   - write and trim enter the stripes of their chunks (shared), in ascending stripe
//     order, from before Bitmap::start_write until after Bitmap::end_write;
//   - the resync copy of a chunk holds its stripe exclusively while it reads the source
//     and writes the target, so a copy never interleaves with a write of the same chunk
//     (the role of md's resync barrier): a write that lands before the copy is copied
//     again, one that lands after it went to both legs.
// A stripe is two atomics, not a mutex: a writer counter and a copy flag (Dekker-style,
// seq_cst on both sides; waiting with std::atomic::wait). A set copy flag turns new
// writers away, so a copy of a hot chunk is never starved. There is one copier at a
// time (resync_mu), which is what makes the ascending order deadlock-free. Writes only
// share their stripes: two concurrent writes to the same bytes are not ordered against
// each other and may land in different orders on the two legs (md raid1 behaves the
// same way).
//
// Draining. fail_leg, readd_leg and close need "no write in flight": every write and
// trim holds the IO gate, a PageBarrier (one per-thread counter update, the same
// mechanism as the bitmap's pages), and those calls suspend it, which waits for the
// writes in flight and holds new ones in raise() until resume.
//
// Leg states: active, failed, recovering (re-added, being copied: it receives the writes
// but is not read). They change with the gate suspended, or, when a write to a leg
// fails, in the write path after the bitmap was made degraded (so the daemon cleans
// nothing that the failed leg may lack).
//
// Persistent state besides the legs and the bitmap, in small marker files next to the
// primary (written durably: temporary file, fsync, rename, directory fsync):
//   <primary>.llmirror-degraded  the index of a failed leg. Written when a leg fails,
//                                removed when readd_leg completes; at open, that leg
//                                starts failed and the bitmap degraded.
//   <primary>.llmirror-clean     kNone and kClassic modes only: written by a clean close,
//                                removed (durably) at open. Missing at open means an
//                                unclean shutdown: the whole device needs a resync.
//   <primary>.llmirror-id        kLlbitmap mode: "uuid=<32 hex digits> events=<n>", the
//                                mirror's device uuid (made when the bitmap is created,
//                                or when an older mirror without this file is first
//                                opened) and the bitmap's events() as last recorded
//                                (after every open and close). The bitmap is opened with
//                                both (OpenOptions::device_uuid, min_events): another
//                                mirror's bitmap is refused (Errc::foreign_bitmap), and
//                                a bitmap older than the record (a restored backup, a
//                                copy of an earlier state) opens out of date, every chunk
//                                NeedSync, so the next resync or re-add copies the whole
//                                device instead of trusting it.
//
// Failing a leg (fail_leg) first cleans the bitmap (Bitmap::flush: both legs are
// fdatasynced, then every chunk becomes Clean) while no write is in flight, then makes
// the bitmap degraded: from then on every written chunk becomes NeedSync, so the re-add
// copies exactly the chunks written meanwhile. A leg that failed on an IO error is not
// flushed; its Dirty chunks are copied by the re-add too. The re-add copies, while the
// bitmap is still degraded, every chunk that is NeedSync, Syncing or Dirty (Startsync
// turns Dirty into Syncing when degraded, as md's recovery does), then leaves degraded
// mode and copies whatever became NeedSync meanwhile.
#include "mirror.h"

#include <llbitmap/detail/mutex.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/page_barrier.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bitset>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "classic_bitmap.h"
#include "leg_io.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace llbitmap::mirror {

namespace {

constexpr std::size_t kStripes = 256;
// The resync fdatasyncs its target every this many bytes (and at the end), to bound
// the page cache it dirties. Correctness does not depend on it: a copied chunk becomes
// Clean only after the daemon's data flush synced both legs.
constexpr std::uint64_t kResyncSyncBytes = 64ull << 20;

enum LegState : int { kActive = 0, kFailed = 1, kRecovering = 2 };

std::error_code errno_code(int e) {
  return {e, std::generic_category()};
}

// One stripe (see the top of the file). Padded: stripes of neighbouring chunks are
// entered by different writers.
struct alignas(64) Stripe {
  std::atomic<std::uint32_t> writers{0};
  std::atomic<bool> copying{false};
};

// Enters (shared) the stripes of the chunks [first, last], ascending; leaves on
// destruction.
class WriteStripes {
 public:
  WriteStripes(std::array<Stripe, kStripes>& stripes, std::uint64_t first_chunk,
               std::uint64_t last_chunk)
      : stripes_(stripes) {
    if (last_chunk - first_chunk + 1 >= kStripes) {
      held_.set();
    } else {
      for (std::uint64_t c = first_chunk; c <= last_chunk; ++c) held_.set(c % kStripes);
    }
    for (std::size_t i = 0; i < kStripes; ++i)
      if (held_.test(i)) enter(stripes_[i]);
  }
  ~WriteStripes() {
    for (std::size_t i = 0; i < kStripes; ++i)
      if (held_.test(i)) leave(stripes_[i]);
  }
  WriteStripes(const WriteStripes&) = delete;
  WriteStripes& operator=(const WriteStripes&) = delete;

 private:
  // seq_cst: the increment and the copier's flag store are ordered against each other,
  // so either the writer sees the flag or the copier sees the writer.
  static void enter(Stripe& s) noexcept {
    for (;;) {
      s.writers.fetch_add(1, std::memory_order_seq_cst);
      if (!s.copying.load(std::memory_order_seq_cst)) return;
      leave(s);  // a copy is on: step back and wait for its end
      s.copying.wait(true, std::memory_order_seq_cst);
    }
  }
  // The last writer out wakes a copier waiting for the stripe to drain.
  static void leave(Stripe& s) noexcept {
    if (s.writers.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        s.copying.load(std::memory_order_seq_cst))
      s.writers.notify_all();
  }
  std::array<Stripe, kStripes>& stripes_;
  std::bitset<kStripes> held_;
};

// Holds one stripe exclusively (the resync copy of one chunk). One copier at a time.
class CopyStripe {
 public:
  explicit CopyStripe(Stripe& s) : s_(s) {
    s_.copying.store(true, std::memory_order_seq_cst);
    for (std::uint32_t n; (n = s_.writers.load(std::memory_order_seq_cst)) != 0;)
      s_.writers.wait(n, std::memory_order_seq_cst);
  }
  ~CopyStripe() {
    s_.copying.store(false, std::memory_order_seq_cst);
    s_.copying.notify_all();
  }
  CopyStripe(const CopyStripe&) = delete;
  CopyStripe& operator=(const CopyStripe&) = delete;

 private:
  Stripe& s_;
};

// Suspends the IO gate (waits for every write in flight; later ones wait in raise())
// and resumes it on destruction.
class Drain {
 public:
  explicit Drain(PageBarrier& gate) : gate_(gate) {
    while (!gate_.suspend(std::chrono::seconds(1))) {
    }
  }
  ~Drain() { gate_.resume(); }
  Drain(const Drain&) = delete;
  Drain& operator=(const Drain&) = delete;

 private:
  PageBarrier& gate_;
};

// Holds the IO gate for one write or trim.
class GateHold {
 public:
  explicit GateHold(PageBarrier& gate) : gate_(gate) { gate_.raise(); }
  ~GateHold() { gate_.release(); }
  GateHold(const GateHold&) = delete;
  GateHold& operator=(const GateHold&) = delete;

 private:
  PageBarrier& gate_;
};

// A chunk-sized buffer aligned for any IO (O_DIRECT-friendly if a caller ever wants it).
struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t n) {
    void* p = nullptr;
    if (::posix_memalign(&p, 4096, n) == 0) data.reset(static_cast<std::byte*>(p));
  }
  struct Free {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data;
};

// The id file (see the top of the file): "uuid=<32 hex digits> events=<n>\n".
std::error_code write_identity(const std::filesystem::path& path, const DeviceUuid& uuid,
                               std::uint64_t events) {
  std::string text = "uuid=";
  static constexpr char kHex[] = "0123456789abcdef";
  for (const std::uint8_t b : uuid) {
    text += kHex[b >> 4];
    text += kHex[b & 15];
  }
  text += " events=" + std::to_string(events) + "\n";
  return write_marker(path, text);
}

}  // namespace

struct Mirror::Impl {
  MirrorOptions opt;
  std::uint64_t size = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t chunks = 0;
  std::filesystem::path path[2];
  // Set at open, closed at close; readd_leg replaces the file behind a number (dup3)
  // but never the number.
  int fd[2] = {-1, -1};
  // LegState. Changed with the gate suspended (or see note_leg_error); read by the IO
  // paths and by the data flush hook. acquire/release pairs the store of a state with
  // the loads that act on it.
  std::atomic<int> state[2] = {kActive, kActive};
  std::atomic<bool> leg_error[2] = {false, false};  // an IO error failed the leg
  std::unique_ptr<Bitmap> bitmap;
  std::unique_ptr<bench::ClassicBitmap> classic;
  // kNone / kClassic: the next resync must copy everything (unclean shutdown, new leg).
  std::atomic<bool> full_resync{false};
  std::array<Stripe, kStripes> stripes;
  PageBarrier gate;  // the IO gate: held by every write and trim
  std::filesystem::path clean_marker, degraded_marker, id_file;
  DeviceUuid device_uuid{};  // kLlbitmap: the mirror's identity (see id_file)
  detail::Mutex admin_mu;    // fail_leg, readd_leg, close
  detail::Mutex resync_mu;   // one copy pass at a time
  detail::Mutex marker_mu;   // the degraded marker and the "last working leg" decision
  std::atomic<bool> closed{false};

  // kClassic: the old md-bitmap daemon's cleaning passes.
  std::thread classic_daemon;
  detail::Mutex classic_mu;
  detail::CondVar classic_cv;
  bool classic_stop LLBM_GUARDED_BY(classic_mu) = false;

  // Statistics (relaxed: plain counters).
  std::atomic<std::uint64_t> writes{0}, fua_writes{0}, bytes_written{0}, trims{0}, leg_syncs{0},
      chunks_copied{0}, bytes_copied{0}, leg_errors{0};

  ~Impl() {
    stop_classic_daemon();
    bitmap.reset();  // an open bitmap closes itself: its data flush needs the legs
    for (int& f : fd) {
      if (f >= 0) ::close(f);
      f = -1;
    }
  }

  std::uint64_t chunk_of(std::uint64_t off) const noexcept { return off / chunk_bytes; }
  int load_state(int leg) const noexcept { return state[leg].load(std::memory_order_acquire); }

  std::error_code sync_leg(int leg) {
    leg_syncs.fetch_add(1, std::memory_order_relaxed);
    return sync_fd(fd[leg]);
  }

  // The bitmap's data flush hook: every leg that receives writes is made durable.
  std::error_code data_flush() {
    std::error_code first;
    for (int leg = 0; leg < 2; ++leg) {
      if (load_state(leg) == kFailed) continue;
      if (std::error_code ec = sync_leg(leg); ec && !first) first = ec;
    }
    return first;
  }

  // A leg failed on an IO error, in the IO path (it holds the gate). Degraded
  // first, so that the daemon cleans nothing the leg may lack; then the state and the
  // marker. Returns false (and changes nothing) if the other leg is not active: the
  // last working leg is never failed.
  bool note_leg_error(int leg) {
    detail::MutexLock lk(marker_mu);
    if (load_state(leg) == kFailed) return true;
    if (load_state(1 - leg) != kActive) return false;
    if (bitmap) bitmap->set_degraded(true);
    leg_error[leg].store(true, std::memory_order_relaxed);
    state[leg].store(kFailed, std::memory_order_release);
    leg_errors.fetch_add(1, std::memory_order_relaxed);
    record_failed_leg(leg);
    return true;
  }

  // Records the device uuid and the bitmap's events in id_file (durably).
  std::error_code record_identity() {
    return write_identity(id_file, device_uuid, bitmap->events());
  }

  void record_failed_leg(int leg) LLBM_REQUIRES(marker_mu) {
    if (std::error_code ec = write_marker(degraded_marker, std::to_string(leg) + "\n"))
      std::fprintf(stderr, "llmirror: cannot record the failed leg %d in %s: %s\n", leg,
                   degraded_marker.c_str(), ec.message().c_str());
  }

  void start_classic_daemon() {
    classic_daemon = std::thread([this] {
      detail::MutexLock lk(classic_mu);
      while (!classic_stop) {
        (void)classic_cv.wait_for(classic_mu, opt.daemon_sleep);
        if (classic_stop) break;
        classic_mu.unlock();
        (void)classic->daemon_pass();
        classic_mu.lock();
      }
    });
  }
  void stop_classic_daemon() {
    if (!classic_daemon.joinable()) return;
    {
      detail::MutexLock lk(classic_mu);
      classic_stop = true;
    }
    classic_cv.notify_all();
    classic_daemon.join();
  }

  // Copies the chunks of `runs` from leg src to leg dst; `p` accumulates. With
  // use_bitmap, a chunk is copied only if start_sync(offset, kind) says so, and end_sync
  // follows.
  std::error_code copy_runs(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& runs,
                            int src, int dst, bool use_bitmap, ResyncProgress& p,
                            const std::function<void(const ResyncProgress&)>& progress,
                            SyncKind kind = SyncKind::kResync);
};

// ------------------------------------------------------------------ open

namespace {

// Opens (or creates, sparse) one leg.
std::error_code open_leg(const std::filesystem::path& path, bool create, int& fd, bool& created) {
  created = false;
  fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd >= 0) return {};
  if (errno != ENOENT || !create) return errno_code(errno);
  fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errno_code(errno);
  created = true;
  return {};
}

// Reads the id file; `exists` is false when there is none. A file that does not parse
// is std::errc::invalid_argument (nothing is guessed: the identity is what protects
// the legs from another mirror's bitmap).
std::error_code read_identity(const std::filesystem::path& path, DeviceUuid& uuid,
                              std::uint64_t& events, bool& exists) {
  std::string text;
  if (std::error_code ec = read_marker(path, text, exists)) return ec;
  if (!exists) return {};
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const std::string kUuid = "uuid=", kEvents = " events=";
  if (text.compare(0, kUuid.size(), kUuid) != 0 ||
      text.size() < kUuid.size() + 32 + kEvents.size() ||
      text.compare(kUuid.size() + 32, kEvents.size(), kEvents) != 0)
    return std::make_error_code(std::errc::invalid_argument);
  for (std::size_t i = 0; i < uuid.size(); ++i) {
    const int hi = hex(text[kUuid.size() + 2 * i]), lo = hex(text[kUuid.size() + 2 * i + 1]);
    if (hi < 0 || lo < 0) return std::make_error_code(std::errc::invalid_argument);
    uuid[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  const std::string digits = text.substr(kUuid.size() + 32 + kEvents.size());
  char* end = nullptr;
  errno = 0;
  events = std::strtoull(digits.c_str(), &end, 10);
  if (errno != 0 || end == digits.c_str() || (*end != '\n' && *end != '\0'))
    return std::make_error_code(std::errc::invalid_argument);
  return {};
}

DeviceUuid new_device_uuid() {
  const Uuid u = random_uuid();
  DeviceUuid d{};
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = std::to_integer<std::uint8_t>(u[i]);
  return d;
}

std::uint64_t auto_chunk_bytes(std::uint64_t size, std::uint64_t requested, std::error_code& ec) {
  GeometryOptions go;
  go.device_bytes = size;
  go.chunk_bytes = requested;
  auto g = Geometry::compute(go, ec);
  return g ? g->chunk_bytes() : 0;
}

}  // namespace

Mirror::Mirror(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Mirror::~Mirror() {
  if (impl_ && !impl_->closed.load(std::memory_order_acquire)) (void)close();
}

std::unique_ptr<Mirror> Mirror::open(const MirrorOptions& options, std::error_code& ec) {
  ec.clear();
  if (options.primary.empty() || options.secondary.empty() ||
      (options.mode == Mode::kLlbitmap && options.bitmap.empty())) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return nullptr;
  }
  auto m = std::make_unique<Impl>();
  m->opt = options;
  m->path[0] = options.primary;
  m->path[1] = options.secondary;
  m->clean_marker = options.primary;
  m->clean_marker += ".llmirror-clean";
  m->degraded_marker = options.primary;
  m->degraded_marker += ".llmirror-degraded";
  m->id_file = options.primary;
  m->id_file += ".llmirror-id";

  bool created[2] = {false, false};
  for (int leg = 0; leg < 2; ++leg) {
    if ((ec = open_leg(m->path[leg], options.create, m->fd[leg], created[leg]))) {
      // Do not leave a half-created mirror behind.
      for (int l = 0; l < leg; ++l)
        if (created[l]) ::unlink(m->path[l].c_str());
      return nullptr;
    }
  }
  auto undo_created = [&] {
    for (int l = 0; l < 2; ++l)
      if (created[l]) ::unlink(m->path[l].c_str());
  };

  std::uint64_t leg_bytes[2] = {0, 0};
  bool leg_known[2] = {false, false};
  for (int leg = 0; leg < 2; ++leg) {
    if ((ec = leg_size(m->fd[leg], leg_bytes[leg], leg_known[leg]))) {
      undo_created();
      return nullptr;
    }
  }

  // The bitmap, if there is one already, knows the size.
  const bool llbm = options.mode == Mode::kLlbitmap;
  bool bitmap_created = false;
  OpenOptions oo;
  oo.data_flush = [impl = m.get()] { return impl->data_flush(); };
  if (llbm) {
    // The identity the bitmap must carry (a mirror made before the id file existed gets
    // one now; its unbound bitmap is bound to it by the open).
    bool id_exists = false;
    std::uint64_t recorded_events = 0;
    if ((ec = read_identity(m->id_file, m->device_uuid, recorded_events, id_exists))) {
      undo_created();
      return nullptr;
    }
    if (!id_exists) m->device_uuid = new_device_uuid();
    oo.device_uuid = m->device_uuid;
    oo.min_events = recorded_events;
    std::error_code exists_ec;
    if (std::filesystem::exists(options.bitmap, exists_ec)) {
      m->bitmap = Bitmap::open(options.bitmap, oo, ec);
      if (!m->bitmap) {
        undo_created();
        return nullptr;
      }
      if (options.size != 0 && options.size != m->bitmap->device_bytes()) {
        ec = std::make_error_code(std::errc::invalid_argument);
        undo_created();
        return nullptr;
      }
      m->size = m->bitmap->device_bytes();
    } else if (!options.create) {
      ec = std::make_error_code(std::errc::no_such_file_or_directory);
      undo_created();
      return nullptr;
    }
  }
  if (m->size == 0) {
    m->size = options.size;
    if (m->size == 0) {  // the smaller existing leg
      for (int leg = 0; leg < 2; ++leg)
        if (!created[leg] && leg_known[leg])
          m->size = m->size == 0 ? leg_bytes[leg] : std::min(m->size, leg_bytes[leg]);
    }
  }
  if (m->size == 0) {
    ec = std::make_error_code(std::errc::invalid_argument);
    undo_created();
    return nullptr;
  }
  // Every leg must hold the device: new or short regular files grow (sparse) if allowed.
  for (int leg = 0; leg < 2; ++leg) {
    if (!leg_known[leg] || leg_bytes[leg] >= m->size) continue;
    struct stat st {};
    const bool regular = ::fstat(m->fd[leg], &st) == 0 && S_ISREG(st.st_mode);
    if (!regular || !(options.create || created[leg]) ||
        ::ftruncate(m->fd[leg], static_cast<off_t>(m->size)) != 0) {
      ec = regular && (options.create || created[leg])
               ? errno_code(errno)
               : std::make_error_code(std::errc::invalid_argument);
      undo_created();
      return nullptr;
    }
  }
  if (created[0] || created[1]) {
    for (int leg = 0; leg < 2; ++leg) {
      if (created[leg] && ((ec = sync_fd(m->fd[leg])) || (ec = sync_parent_dir(m->path[leg])))) {
        undo_created();
        return nullptr;
      }
    }
  }
  // Both legs new: they agree (all zeros). Exactly one new: it must be copied entirely.
  const bool one_new = created[0] != created[1];

  if (llbm) {
    if (!m->bitmap) {
      BitmapOptions bo;
      bo.device_bytes = m->size;
      bo.chunk_bytes = options.chunk_bytes;
      bo.daemon_sleep = options.daemon_sleep;
      bo.barrier_idle = options.barrier_idle;
      bo.data_flush = oo.data_flush;
      bo.device_uuid = m->device_uuid;
      m->bitmap = Bitmap::create(options.bitmap, bo, ec);
      if (!m->bitmap) {
        undo_created();
        return nullptr;
      }
      bitmap_created = true;
    } else {  // the runtime knobs come from the options, not from the file
      (void)m->bitmap->set_daemon_sleep(options.daemon_sleep);
      (void)m->bitmap->set_barrier_idle(options.barrier_idle);
    }
    m->chunk_bytes = m->bitmap->chunk_bytes();
    // The events this open left in the bitmap: a copy of it older than this is caught
    // at the next open.
    if ((ec = m->record_identity())) return nullptr;
    // A clean marker left by a kNone/kClassic run no longer tells the truth once this
    // run writes: drop it (the bitmap records everything now).
    if ((ec = remove_marker(m->clean_marker))) return nullptr;
    // Legs of unknown agreement under a new bitmap: resync everything. A new blank leg
    // under an existing bitmap: rebuild every chunk that is not Unwritten. A write while
    // degraded gives NeedSync, durably: that records it in the bitmap.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> mark;
    if (bitmap_created && !(created[0] && created[1]))
      mark.emplace_back(0, m->size);
    else if (one_new)
      mark = m->bitmap->needs_rebuild();
    if (!mark.empty()) {
      m->bitmap->set_degraded(true);
      for (const auto& [off, len] : mark) {
        if ((ec = m->bitmap->start_write(off, len))) break;
        m->bitmap->end_write(off, len);
      }
      m->bitmap->set_degraded(false);
      if (ec) return nullptr;
    }
  } else {
    m->chunk_bytes = auto_chunk_bytes(m->size, options.chunk_bytes, ec);
    if (ec) {
      undo_created();
      return nullptr;
    }
    bool clean = false;
    std::string text;
    if ((ec = read_marker(m->clean_marker, text, clean))) return nullptr;
    if ((ec = remove_marker(m->clean_marker))) return nullptr;  // durable before any write
    const bool both_new = created[0] && created[1];
    m->full_resync.store(one_new || (!both_new && !clean), std::memory_order_relaxed);
    if (options.mode == Mode::kClassic) {
      m->classic = std::make_unique<bench::ClassicBitmap>(m->size, m->chunk_bytes);
      m->start_classic_daemon();
    }
  }
  m->chunks = (m->size + m->chunk_bytes - 1) / m->chunk_bytes;

  // A leg recorded as failed by an earlier run stays failed until readd_leg (a marker
  // next to two new legs belonged to an earlier mirror).
  if (created[0] && created[1] && (ec = remove_marker(m->degraded_marker))) return nullptr;
  {
    std::string text;
    bool exists = false;
    if ((ec = read_marker(m->degraded_marker, text, exists))) return nullptr;
    if (exists) {
      const int leg = text.empty() ? -1 : text[0] - '0';
      if (leg == 0 || leg == 1) {
        if (m->bitmap) m->bitmap->set_degraded(true);
        m->state[leg].store(kFailed, std::memory_order_release);
      }
    }
  }
  return std::unique_ptr<Mirror>(new Mirror(std::move(m)));
}

// ------------------------------------------------------------------ IO

std::error_code Mirror::write(std::uint64_t offset, std::span<const std::byte> data, bool fua) {
  Impl& m = *impl_;
  if (m.closed.load(std::memory_order_relaxed))
    return std::make_error_code(std::errc::bad_file_descriptor);
  const std::uint64_t len = data.size();
  if (len == 0) return {};
  if (offset >= m.size || len > m.size - offset)
    return std::make_error_code(std::errc::invalid_argument);

  GateHold gate(m.gate);
  if (m.closed.load(std::memory_order_acquire))  // closed while this write waited
    return std::make_error_code(std::errc::bad_file_descriptor);
  WriteStripes stripes(m.stripes, m.chunk_of(offset), m.chunk_of(offset + len - 1));
  if (m.bitmap) {
    if (std::error_code ec = m.bitmap->start_write(offset, len)) return ec;  // not issued
  } else if (m.classic) {
    m.classic->start_write(offset, len);
    (void)m.classic->unplug();  // md writes the bitmap pages before the data
  }

  std::error_code leg_ec[2];
  bool wrote[2] = {false, false};
  for (int leg = 0; leg < 2; ++leg) {
    if (m.load_state(leg) == kFailed) continue;
    leg_ec[leg] = pwrite_all(m.fd[leg], data.data(), data.size(), offset);
    if (!leg_ec[leg] && fua) leg_ec[leg] = m.sync_leg(leg);
    wrote[leg] = !leg_ec[leg];
  }
  // A leg that failed while the other one took the data: fail it (degraded before
  // end_write, so the chunk cannot be cleaned) and report success, as md does.
  std::error_code result;
  if (!wrote[0] && !wrote[1]) {
    result = leg_ec[0] ? leg_ec[0] : leg_ec[1];
    if (!result) result = std::make_error_code(std::errc::io_error);  // no leg left
  } else {
    for (int leg = 0; leg < 2; ++leg)
      if (leg_ec[leg] && !m.note_leg_error(leg)) result = leg_ec[leg];
  }

  if (m.bitmap)
    m.bitmap->end_write(offset, len);
  else if (m.classic)
    m.classic->end_write(offset, len, !result);
  if (!result) {
    m.writes.fetch_add(1, std::memory_order_relaxed);
    if (fua) m.fua_writes.fetch_add(1, std::memory_order_relaxed);
    m.bytes_written.fetch_add(len, std::memory_order_relaxed);
  }
  return result;
}

std::error_code Mirror::read(std::uint64_t offset, std::span<std::byte> out) {
  Impl& m = *impl_;
  if (m.closed.load(std::memory_order_relaxed))
    return std::make_error_code(std::errc::bad_file_descriptor);
  if (out.empty()) return {};
  if (offset >= m.size || out.size() > m.size - offset)
    return std::make_error_code(std::errc::invalid_argument);
  // The primary unless it is failed or being recovered; the other leg on a read error.
  std::error_code first;
  for (int leg = 0; leg < 2; ++leg) {
    if (m.load_state(leg) != kActive) continue;
    std::error_code ec = pread_all(m.fd[leg], out.data(), out.size(), offset);
    if (!ec) return {};
    if (!first) first = ec;
  }
  return first ? first : std::make_error_code(std::errc::io_error);
}

std::error_code Mirror::flush() {
  Impl& m = *impl_;
  if (m.closed.load(std::memory_order_relaxed))
    return std::make_error_code(std::errc::bad_file_descriptor);
  std::error_code ec[2];
  bool synced[2] = {false, false};
  for (int leg = 0; leg < 2; ++leg) {
    if (m.load_state(leg) == kFailed) continue;
    ec[leg] = m.sync_leg(leg);
    synced[leg] = !ec[leg];
  }
  if (!synced[0] && !synced[1]) {
    if (ec[0]) return ec[0];
    return ec[1] ? ec[1] : std::make_error_code(std::errc::io_error);
  }
  for (int leg = 0; leg < 2; ++leg)
    if (ec[leg] && !m.note_leg_error(leg)) return ec[leg];
  return {};
}

namespace {

// Deallocates [offset, offset + length) of a leg; where the file system cannot punch
// holes, writes zeros so that the legs keep agreeing.
std::error_code punch_leg(int fd, std::uint64_t offset, std::uint64_t length) {
  for (;;) {
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(length)) == 0)
      return {};
    if (errno == EINTR) continue;
    if (errno != EOPNOTSUPP && errno != ENOTTY && errno != ENODEV) return errno_code(errno);
    break;
  }
  std::vector<std::byte> zeros(std::min<std::uint64_t>(length, 1 << 20));
  while (length > 0) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(length, zeros.size()));
    if (std::error_code ec = pwrite_all(fd, zeros.data(), n, offset)) return ec;
    offset += n;
    length -= n;
  }
  return {};
}

}  // namespace

std::error_code Mirror::trim(std::uint64_t offset, std::uint64_t length) {
  Impl& m = *impl_;
  if (m.closed.load(std::memory_order_relaxed))
    return std::make_error_code(std::errc::bad_file_descriptor);
  if (length == 0) return {};
  if (offset >= m.size || length > m.size - offset)
    return std::make_error_code(std::errc::invalid_argument);
  const std::uint64_t end = offset + length;
  GateHold gate(m.gate);
  if (m.closed.load(std::memory_order_acquire))
    return std::make_error_code(std::errc::bad_file_descriptor);
  WriteStripes stripes(m.stripes, m.chunk_of(offset), m.chunk_of(end - 1));

  // Chunks the trim covers entirely take the bitmap's Discard (Unwritten, as md). The
  // partly covered ones at either end keep data the legs must agree on: they are
  // written (durably Dirty), so a crash in the middle of the punch resyncs them.
  const std::uint64_t cb = m.chunk_bytes;
  const std::uint64_t full_first = (offset + cb - 1) / cb * cb;
  const std::uint64_t full_end = end == m.size ? end : end / cb * cb;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> partial;  // (offset, length)
  bool discard = false;
  if (full_first >= full_end) {
    partial.emplace_back(offset, length);
  } else {
    discard = true;
    if (offset < full_first) partial.emplace_back(offset, full_first - offset);
    if (full_end < end) partial.emplace_back(full_end, end - full_end);
  }
  std::size_t started = 0;
  std::error_code ec;
  bool discarding = false;
  if (m.bitmap) {
    for (; started < partial.size(); ++started)
      if ((ec = m.bitmap->start_write(partial[started].first, partial[started].second))) break;
    if (!ec && discard) {
      ec = m.bitmap->start_discard(full_first, full_end - full_first);
      discarding = !ec;
    }
  } else if (m.classic) {
    m.classic->start_write(offset, length);
    (void)m.classic->unplug();
  }

  if (!ec) {
    std::error_code leg_ec[2];
    bool done[2] = {false, false};
    for (int leg = 0; leg < 2; ++leg) {
      if (m.load_state(leg) == kFailed) continue;
      leg_ec[leg] = punch_leg(m.fd[leg], offset, length);
      done[leg] = !leg_ec[leg];
    }
    if (!done[0] && !done[1]) {
      ec = leg_ec[0] ? leg_ec[0] : leg_ec[1];
      if (!ec) ec = std::make_error_code(std::errc::io_error);
    } else {
      for (int leg = 0; leg < 2; ++leg)
        if (leg_ec[leg] && !m.note_leg_error(leg)) ec = leg_ec[leg];
    }
    if (!ec) m.trims.fetch_add(1, std::memory_order_relaxed);
  }

  if (m.bitmap) {
    if (discarding) m.bitmap->end_discard(full_first, full_end - full_first);
    for (std::size_t i = 0; i < started; ++i)
      m.bitmap->end_write(partial[i].first, partial[i].second);
  } else if (m.classic) {
    m.classic->end_write(offset, length, !ec);
  }
  return ec;
}

// ------------------------------------------------------------------ resync

std::error_code Mirror::Impl::copy_runs(
    const std::vector<std::pair<std::uint64_t, std::uint64_t>>& runs, int src, int dst,
    bool use_bitmap, ResyncProgress& p, const std::function<void(const ResyncProgress&)>& progress,
    SyncKind kind) {
  for (const auto& [off, len] : runs) p.chunks_total += (len + chunk_bytes - 1) / chunk_bytes;
  if (progress) progress(p);
  AlignedBuffer buf(static_cast<std::size_t>(chunk_bytes));
  if (!buf.data) return std::make_error_code(std::errc::not_enough_memory);
  std::uint64_t unsynced = 0;
  std::error_code ec;
  for (const auto& [run_off, run_len] : runs) {
    const std::uint64_t run_end = run_off + run_len;
    for (std::uint64_t o = run_off / chunk_bytes * chunk_bytes; o < run_end; o += chunk_bytes) {
      const std::uint64_t n = std::min(chunk_bytes, size - o);
      if (use_bitmap && !bitmap->start_sync(o, kind)) {
        ++p.chunks_done;
        if (progress) progress(p);
        continue;
      }
      {
        CopyStripe lk(stripes[chunk_of(o) % kStripes]);
        if (load_state(src) == kFailed || load_state(dst) == kFailed)
          ec = std::make_error_code(std::errc::operation_canceled);  // a leg failed meanwhile
        else if (!(ec = pread_all(fd[src], buf.data.get(), n, o)))
          ec = pwrite_all(fd[dst], buf.data.get(), n, o);
      }
      if (ec) {
        if (use_bitmap) bitmap->abort_sync(o);
        break;
      }
      if (use_bitmap) bitmap->end_sync(o);
      ++p.chunks_done;
      p.bytes_copied += n;
      chunks_copied.fetch_add(1, std::memory_order_relaxed);
      bytes_copied.fetch_add(n, std::memory_order_relaxed);
      unsynced += n;
      if (unsynced >= kResyncSyncBytes) {
        if ((ec = sync_leg(dst))) break;
        unsynced = 0;
      }
      if (progress) progress(p);
    }
    if (ec) break;
  }
  if (!ec && unsynced > 0) ec = sync_leg(dst);
  return ec;
}

std::error_code Mirror::resync(const std::function<void(const ResyncProgress&)>& progress) {
  Impl& m = *impl_;
  if (m.closed.load(std::memory_order_relaxed))
    return std::make_error_code(std::errc::bad_file_descriptor);
  detail::MutexLock lk(m.resync_mu);
  // With a leg failed there is nothing to copy to: readd_leg copies.
  if (m.load_state(0) != kActive || m.load_state(1) != kActive) return {};
  const bool full = !m.bitmap && m.full_resync.load(std::memory_order_relaxed);
  const auto runs = needs_sync();
  ResyncProgress p;
  if (std::error_code ec = m.copy_runs(runs, 0, 1, m.bitmap != nullptr, p, progress)) {
    // A leg that failed on IO while copying: degraded, as for a write.
    return ec;
  }
  if (full) m.full_resync.store(false, std::memory_order_relaxed);
  return {};
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> Mirror::needs_sync() const {
  const Impl& m = *impl_;
  if (m.bitmap) return m.bitmap->needs_sync();
  if (m.full_resync.load(std::memory_order_relaxed)) return {{0, m.size}};
  return {};
}

// ------------------------------------------------------------------ legs

void Mirror::fail_leg(int leg) {
  Impl& m = *impl_;
  if (leg < 0 || leg > 1 || m.closed.load(std::memory_order_relaxed)) return;
  detail::MutexLock admin(m.admin_mu);
  Drain drain(m.gate);  // no write in flight from here
  detail::MutexLock lk(m.marker_mu);
  if (m.load_state(leg) == kFailed) return;
  if (m.load_state(1 - leg) != kActive) return;  // never fail the last working leg
  // Clean what both legs hold (both synced first), so that the re-add copies only what
  // is written from now on. An error leaves chunks Dirty: the re-add copies them too.
  if (m.bitmap && m.load_state(leg) == kActive && !m.leg_error[leg].load(std::memory_order_relaxed))
    (void)m.bitmap->flush();
  if (m.bitmap) m.bitmap->set_degraded(true);
  m.state[leg].store(kFailed, std::memory_order_release);
  m.record_failed_leg(leg);
}

std::error_code Mirror::readd_leg(int leg,
                                  const std::function<void(const ResyncProgress&)>& progress) {
  Impl& m = *impl_;
  if (m.closed.load(std::memory_order_relaxed))
    return std::make_error_code(std::errc::bad_file_descriptor);
  if (leg < 0 || leg > 1) return std::make_error_code(std::errc::invalid_argument);
  detail::MutexLock admin(m.admin_mu);
  detail::MutexLock rl(m.resync_mu);
  const int src = 1 - leg;
  if (m.load_state(leg) != kFailed) return {};  // nothing to bring back
  if (m.load_state(src) != kActive) return std::make_error_code(std::errc::io_error);

  // A fresh open file description: the old one may carry the error that failed the
  // leg. dup2 swaps it in under the same descriptor number, so a data flush that is
  // still running on the old one is never confused by a reused number.
  const int nfd = ::open(m.path[leg].c_str(), O_RDWR | O_CLOEXEC);
  if (nfd < 0) return errno_code(errno);
  {
    Drain drain(m.gate);
    const bool swapped = ::dup3(nfd, m.fd[leg], O_CLOEXEC) >= 0;
    const int e = errno;
    ::close(nfd);
    if (!swapped) return errno_code(e);
    m.state[leg].store(kRecovering, std::memory_order_release);  // receives writes from now
  }

  // Pass 1, still degraded: every chunk that is not known to agree (Dirty included: a
  // write may have been in flight to it when the leg went away).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
  if (m.bitmap)
    runs = m.bitmap->needs_recovery();
  else
    runs.emplace_back(0, m.size);
  ResyncProgress p;
  std::error_code ec =
      m.copy_runs(runs, src, leg, m.bitmap != nullptr, p, progress, SyncKind::kRecovery);
  if (ec) {
    Drain drain(m.gate);
    m.state[leg].store(kFailed, std::memory_order_release);
    return ec;
  }
  {
    Drain drain(m.gate);
    m.leg_error[leg].store(false, std::memory_order_relaxed);
    m.state[leg].store(kActive, std::memory_order_release);
    if (m.bitmap) m.bitmap->set_degraded(false);
  }
  // Pass 2: chunks written during pass 1 became NeedSync (degraded) although both legs
  // got those writes; copying them again is cheap and leaves nothing NeedSync.
  if (m.bitmap) {
    if ((ec = m.copy_runs(m.bitmap->needs_sync(), src, leg, true, p, progress))) return ec;
  } else {
    m.full_resync.store(false, std::memory_order_relaxed);
  }
  detail::MutexLock lk(m.marker_mu);
  return remove_marker(m.degraded_marker);
}

// ------------------------------------------------------------------ close & info

std::error_code Mirror::close() {
  Impl& m = *impl_;
  if (m.closed.load(std::memory_order_acquire)) return {};
  detail::MutexLock admin(m.admin_mu);
  std::error_code ec;
  {
    Drain drain(m.gate);  // waits for the writes in flight
    m.stop_classic_daemon();
    ec = m.data_flush();
    if (m.bitmap) {
      std::error_code bec = m.bitmap->close();
      if (bec == Errc::busy) return bec;  // cannot happen with the gate suspended; keep open
      // The events close left in the bitmap (see id_file).
      if (!bec) bec = m.record_identity();
      if (!ec) ec = bec;
    } else if (!ec && !m.full_resync.load(std::memory_order_relaxed)) {
      ec = write_marker(m.clean_marker, "clean\n");
    }
    m.closed.store(true, std::memory_order_release);
  }
  for (int& f : m.fd) {
    if (f >= 0 && ::close(f) != 0 && !ec) ec = errno_code(errno);
    f = -1;
  }
  return ec;
}

std::uint64_t Mirror::size() const noexcept {
  return impl_->size;
}

Bitmap* Mirror::bitmap() noexcept {
  return impl_->bitmap.get();
}

std::uint64_t Mirror::chunk_bytes() const noexcept {
  return impl_->chunk_bytes;
}

bool Mirror::leg_failed(int leg) const noexcept {
  return leg >= 0 && leg <= 1 && impl_->load_state(leg) == kFailed;
}

MirrorStats Mirror::stats() const noexcept {
  const Impl& m = *impl_;
  MirrorStats s;
  s.writes = m.writes.load(std::memory_order_relaxed);
  s.fua_writes = m.fua_writes.load(std::memory_order_relaxed);
  s.bytes_written = m.bytes_written.load(std::memory_order_relaxed);
  s.trims = m.trims.load(std::memory_order_relaxed);
  s.leg_syncs = m.leg_syncs.load(std::memory_order_relaxed);
  s.chunks_copied = m.chunks_copied.load(std::memory_order_relaxed);
  s.bytes_copied = m.bytes_copied.load(std::memory_order_relaxed);
  s.leg_errors = m.leg_errors.load(std::memory_order_relaxed);
  return s;
}

}  // namespace llbitmap::mirror
