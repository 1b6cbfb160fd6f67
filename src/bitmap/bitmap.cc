// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Bitmap: creation, loading (crash recovery), the write path and the resync calls. The
// state is BitmapImpl's (bitmap_impl.h); persistence is the Persister's (persister.cc),
// cleaning the Daemon's (daemon.cc).
#include <llbitmap/bitmap.h>
#include <llbitmap/detail/check.h>
#include <llbitmap/recovery.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bitmap_impl.h"
#include "image_ops.h"
#include "loading.h"
#include "page_barrier_fast.h"
#include "sync_point.h"

namespace llbitmap {

// ------------------------------------------------------------------ WriteGuard

WriteGuard& WriteGuard::operator=(WriteGuard&& other) noexcept {
  if (this != &other) {
    reset();
    bitmap_ = std::exchange(other.bitmap_, nullptr);
    off_ = other.off_;
    len_ = other.len_;
  }
  return *this;
}

void WriteGuard::reset() noexcept {
  if (bitmap_ != nullptr) std::exchange(bitmap_, nullptr)->end_write(off_, len_);
}

// ------------------------------------------------------------------ creation

namespace {

OpenOptions open_options(const BitmapOptions& o) {
  OpenOptions oo{o.start_daemon, o.parity, o.data_flush, o.clock};
  oo.device_uuid = o.device_uuid;
  return oo;
}

}  // namespace

std::unique_ptr<Bitmap> Bitmap::create(const std::filesystem::path& path,
                                       const BitmapOptions& options, std::error_code& ec) {
  const std::vector<std::byte> contents = fresh_contents(options, ec);
  if (ec) return nullptr;
  auto storage = FileStorage::create(path, contents, ec);
  if (!storage) return nullptr;
  return BitmapImpl::load(std::move(storage), open_options(options), ec);
}

std::unique_ptr<Bitmap> Bitmap::create(std::unique_ptr<Storage> storage,
                                       const BitmapOptions& options, std::error_code& ec) {
  LLBM_CHECK(storage != nullptr, "Bitmap::create: null storage");
  const std::vector<std::byte> contents = fresh_contents(options, ec);
  if (ec) return nullptr;
  if ((ec = storage->write(0, contents))) return nullptr;
  if ((ec = storage->sync())) return nullptr;
  return BitmapImpl::load(std::move(storage), open_options(options), ec);
}

std::unique_ptr<Bitmap> Bitmap::open(const std::filesystem::path& path, std::error_code& ec) {
  return open(path, OpenOptions{}, ec);
}

std::unique_ptr<Bitmap> Bitmap::open(const std::filesystem::path& path, const OpenOptions& options,
                                     std::error_code& ec) {
  auto storage = FileStorage::open(path, ec);
  if (!storage) return nullptr;
  return BitmapImpl::load(std::move(storage), options, ec);
}

std::unique_ptr<Bitmap> Bitmap::open(std::unique_ptr<Storage> storage, const OpenOptions& options,
                                     std::error_code& ec) {
  LLBM_CHECK(storage != nullptr, "Bitmap::open: null storage");
  return BitmapImpl::load(std::move(storage), options, ec);
}

// Reads and validates the file, recovers the states, then makes the recovered states
// durable before the superblock stops saying "stale" (two syncs). A file refused here
// is never written.
std::unique_ptr<Bitmap> BitmapImpl::load(std::unique_ptr<Storage> storage, const OpenOptions& opt,
                                         std::error_code& ec) {
  ec.clear();
  std::uint64_t file_bytes = 0;
  if ((ec = storage->size(file_bytes))) return nullptr;
  std::vector<std::byte> head(std::min<std::uint64_t>(file_bytes, kSuperblockBytes));
  if (!head.empty() && (ec = storage->read(0, head))) return nullptr;
  auto sb = Superblock::decode(head, ec, file_bytes);
  if (!sb) return nullptr;
  // Identity: a file bound to another device is refused before anything is written.
  const Uuid device = to_uuid(opt.device_uuid);
  if (!identity_matches(*sb, opt.device_uuid)) {
    ec = make_error_code(Errc::foreign_bitmap);
    return nullptr;
  }
  const Geometry& g = sb->geometry;
  std::vector<std::byte> image(g.image_bytes());
  std::vector<std::byte> table(g.checksum_table_bytes());
  if ((ec = storage->read(0, image))) return nullptr;
  if ((ec = storage->read(g.checksum_table_offset(), table))) return nullptr;

  std::unique_ptr<BitmapImpl> bm(new BitmapImpl(
      std::move(storage), *sb, recover(*sb, std::move(image), table, opt.min_events), opt));
  if ((ec = bm->persister_.persist_all())) return nullptr;
  // Sync 2: only now (the recovered states, an out-of-date file's NeedSync and, for
  // kSbFirstUse, the initialised states included, are durable) may the superblock stop
  // saying stale or first-use and its events catch up with the engine's record. An
  // unbound file is bound to the device it is opened for.
  bm->edit_superblock([&opt, device](Superblock& s) {
    s.state &= ~(kSbStale | kSbWriteError | kSbFirstUse);
    s.events = std::max(s.events, opt.min_events) + 1;
    if (device != Uuid{}) s.device_uuid = device;
  });
  if ((ec = bm->persister_.persist_all())) return nullptr;
  if (opt.start_daemon) bm->daemon_.start();
  return bm;
}

BitmapImpl::BitmapImpl(std::unique_ptr<Storage> storage, const Superblock& sb, Recovered recovered,
                       const OpenOptions& opt)
    : ok_category_(&std::system_category()),
      clock_(opt.clock != nullptr ? opt.clock : &Clock::system()),
      parity_(opt.parity),
      data_flush_(opt.data_flush),
      invalid_bytes_(recovered.invalid_bytes),
      bad_blocks_(recovered.bad_blocks),
      out_of_date_(recovered.out_of_date),
      pages_(make_pages(sb.geometry.pages(), *clock_, sb.barrier_idle)),
      image_(sb, recovered.image),
      persister_(image_, std::move(storage), std::move(recovered.crc)),
      daemon_(Daemon::Env{image_, persister_, pages_, *clock_, data_flush_, degraded_, parity_},
              sb.daemon_sleep) {
#ifndef NDEBUG
  // calloc: zeroed pages the kernel hands out lazily, for a debug ledger of every chunk.
  in_flight_.reset(
      // NOLINTNEXTLINE(cppcoreguidelines-no-malloc): owned by in_flight_ (FreeDeleter)
      static_cast<std::uint32_t*>(std::calloc(sb.geometry.chunks(), sizeof(std::uint32_t))));
  LLBM_CHECK(in_flight_ != nullptr, "Bitmap %p: no memory for the debug ledger of %llu chunks",
             static_cast<void*>(this), static_cast<unsigned long long>(sb.geometry.chunks()));
#endif
  if (image_.dirty_at_open()) daemon_.arm();
}

Bitmap::~Bitmap() = default;

BitmapImpl::~BitmapImpl() {
  if (!closed()) {
    const std::error_code ec = close();
    LLBM_CHECK(ec != Errc::busy,
               "Bitmap %p: destroyed with a write still in flight (call end_write first)",
               static_cast<void*>(this));
  }
}

// ------------------------------------------------------------------ helpers

TransitionContext BitmapImpl::context() const noexcept {
  // relaxed: degraded_ (see there); failed_ is re-checked where it matters (see
  // Persister::failed_).
  return transition_context(degraded_.load(std::memory_order_relaxed), parity_,
                            persister_.failing(std::memory_order_relaxed));
}

ChunkState Bitmap::state(std::uint64_t chunk) const noexcept {
  const ChunkImage& image = impl(*this).image_;
  const Geometry& geo = image.geometry();
  LLBM_CHECK(chunk < geo.chunks(), "Bitmap %p: chunk %llu past the end (%llu chunks)",
             static_cast<const void*>(this), static_cast<unsigned long long>(chunk),
             static_cast<unsigned long long>(geo.chunks()));
  return decode_state(image.load_byte(geo.chunk_pos(chunk)));
}

void BitmapImpl::discard_chunks(std::uint64_t offset, std::uint64_t length, std::uint64_t& first,
                                std::uint64_t& last) const noexcept {
  image_ops::discard_chunks(image_.geometry(), offset, length, first, last);
}

namespace {

// Raises (or releases) the page barriers of chunks [first, last], ascending. Out of
// line: the write path's one-chunk case uses PageBarrierFast::try_raise/try_release
// instead, and keeping these calls out of it lets it run without saving a register.
//
// A raise never waits while it holds a page (docs/design.md#page-barrier): a pass kills
// all its pages before it drains any, so a writer holding page k and waiting for page k+1
// would wait for a pass that waits for it. Only the first page may wait; the others are
// tried. If one is draining or suspended, a pass is running: the writer releases what it
// holds and raises the whole range between passes, where no page can be draining or
// suspended, so it backs off at most once.
using PageList = Daemon::PageList;
[[gnu::noinline]] void raise_range(const Geometry& g, const PageList& pages, Daemon& daemon,
                                   std::uint64_t first, std::uint64_t last) noexcept {
  const std::uint64_t lo = g.page_of_chunk(first);
  const std::uint64_t hi = g.page_of_chunk(last);
  detail::PageBarrierFast::raise(*pages[lo]);  // holds nothing yet: may wait
  for (std::uint64_t p = lo + 1; p <= hi; ++p) {
    LLBM_SYNC_POINT("raise_range:next_page");
    if (pages[p]->try_raise()) continue;
    for (std::uint64_t q = lo; q < p; ++q) detail::PageBarrierFast::release(*pages[q]);
    LLBM_SYNC_POINT("raise_range:backed_off");
    daemon.between_passes([&] {
      for (std::uint64_t q = lo; q <= hi; ++q) detail::PageBarrierFast::raise(*pages[q]);
    });
    return;
  }
}
[[gnu::noinline]] void release_range(const Geometry& g, const PageList& pages, std::uint64_t first,
                                     std::uint64_t last) noexcept {
  for (std::uint64_t p = g.page_of_chunk(first); p <= g.page_of_chunk(last); ++p)
    detail::PageBarrierFast::release(*pages[p]);
}

// start_write's answer to a range outside the device, out of line so that the call it
// makes (std::generic_category()) stays out of the write path.
[[gnu::noinline, gnu::cold]] std::error_code invalid_range() noexcept {
  return std::make_error_code(std::errc::invalid_argument);
}

}  // namespace

std::uint64_t BitmapImpl::change_chunk(std::uint64_t chunk, Action action,
                                       const TransitionContext& ctx) {
  const ChunkImage::Change change = image_.change_chunk(chunk, action, ctx);
  if (change.seq == 0) return 0;
  if (change.dirtied) daemon_.note_dirty();
  persister_.enqueue(image_.geometry().block_of_chunk(chunk));
  return change.seq;
}

std::uint64_t BitmapImpl::change_range(std::uint64_t first, std::uint64_t last, Action action,
                                       const TransitionContext& ctx, std::vector<Target>* targets) {
  return image_ops::change_range(image_, first, last, action, ctx, targets,
                                 [this](std::uint64_t c, Action a, const TransitionContext& x) {
                                   return change_chunk(c, a, x);
                                 });
}

// ------------------------------------------------------------------ write path

std::error_code BitmapImpl::mark_and_persist(std::uint64_t first, std::uint64_t last,
                                             Action action) {
  // acquire: as start_write's entry check. A writer that passed that check just before
  // close() finished, then waited on a page close() had suspended, gets here once
  // finish_close() resumed the page: a closed bitmap marks nothing.
  if (const std::uint8_t refused = persister_.refused(std::memory_order_acquire);
      LLBM_UNLIKELY(refused != 0))
    return refusal(refused);
  const TransitionContext ctx = context();
  // Failed since start_write's entry check: the transition table ignores every action
  // now, so nothing would be marked; never report such a write as covered.
  if (LLBM_UNLIKELY(ctx.write_error)) return Errc::bitmap_failed;
  std::vector<Target> targets;
  change_range(first, last, action, ctx, &targets);
  // Chunks this call found dirty-like and durably covered need no persist, whatever else
  // of their blocks is waiting for one (the fast path's rule, for any range).
  if (action == Action::kStartwrite && image_ops::durably_covered(image_, first, last)) return {};
  return persister_.persist(targets.data(), targets.size());
}

using image_ops::startwrite_keeps;

// The fast path (one chunk, already Dirty or NeedSync, durably so): bounds, the failed
// flag, one raise, one byte, its covered bit. No lock, no store but the raise's own, no
// call. Everything else goes to start_write_slow with the pages raised.
// impl(*this) is a static_cast: every field below is at a fixed offset from this.
std::error_code Bitmap::start_write(std::uint64_t offset, std::uint64_t length) {
  BitmapImpl& s = impl(*this);
  if (LLBM_UNLIKELY(!s.in_device(offset, length))) return invalid_range();
  const Geometry& geo = s.image_.geometry();
  const std::uint64_t first = geo.chunk_of(offset);
  const std::uint64_t last = geo.chunk_of(offset + length - 1);
  // Failed or closed, in one load (the closed flag shares the failed flag's word).
  // acquire: pairs with the release stores of Persister::enter_failed_state and
  // Persister::set_closed.
  if (const std::uint8_t refused = s.persister_.refused(std::memory_order_acquire);
      LLBM_UNLIKELY(refused != 0))
    return BitmapImpl::refusal(refused);
#ifdef LLBM_SYNC_POINTS
  // relaxed: a test switch, set before the test's threads start.
  if (detail::test_hooks().mark_before_raise.load(std::memory_order_relaxed)) {
    // The order upstream shipped before ef4ca3d4bf09, kept only so that tests can show
    // their checkers catch it: the daemon can clean the chunk between mark and raise.
    std::vector<Target> targets;
    s.change_range(first, last, Action::kStartwrite, s.context(), &targets);
    LLBM_SYNC_POINT("start_write:after_mark");
    raise_range(geo, s.pages_, s.daemon_, first, last);
    const std::error_code ec = s.persister_.persist(targets.data(), targets.size());
    if (ec)
      release_range(geo, s.pages_, first, last);
    else
      s.ledger_add(first, last);
    LLBM_SYNC_POINT("start_write:done");
    return ec;
  }
#endif
  // Raise before marking (upstream ef4ca3d4bf09): a page the daemon may clean is never
  // marked without a reference that makes the daemon wait for this write. One chunk: the
  // page's raise without its slow path (if it fails it did nothing), so that a chunk that
  // is already covered costs no call and no saved register. Anything else goes to
  // start_write_raise: page by page with the slow paths, then the slow way.
  if (LLBM_UNLIKELY(first != last ||
                    !detail::PageBarrierFast::try_raise(*s.pages_[geo.page_of_chunk(first)])))
    return s.start_write_raise(first, last);
  LLBM_SYNC_POINT("start_write:after_raise");
  // relaxed refused(): as in mark_and_persist, a failure or a close since the entry check
  // must not report the write as covered; the acquire load of the byte orders what
  // follows. A close is always seen here: the raise succeeded in percpu mode after
  // finish_close resumed the page, and that resume (release) happens before it (acquire,
  // PercpuRef's mode), as the close's store of the flag happens before the resume.
  // Durably covered: the chunk's byte in the last durable snapshot of its block was
  // dirty-like too, whatever other chunks of the block changed since (ChunkImage).
  if (LLBM_LIKELY(startwrite_keeps(s.image_.load_byte(geo.chunk_pos(first))) &&
                  s.persister_.refused(std::memory_order_relaxed) == 0)) {
    if (LLBM_LIKELY(s.image_.durably_covered(geo.chunk_pos(first)))) {
      s.ledger_add(first, first);
      LLBM_SYNC_POINT("start_write:done");
      // NOLINTNEXTLINE(modernize-return-braced-init-list): names the type it builds
      return std::error_code(0, *s.ok_category_);
    }
  }
  return s.start_write_slow(first, last);
}

std::error_code BitmapImpl::start_write_raise(std::uint64_t first, std::uint64_t last) {
  raise_range(image_.geometry(), pages_, daemon_, first, last);
  LLBM_SYNC_POINT("start_write:after_raise");
  return start_write_slow(first, last);
}

std::error_code BitmapImpl::start_write_slow(std::uint64_t first, std::uint64_t last) {
  const std::error_code ec = mark_and_persist(first, last, Action::kStartwrite);
  if (LLBM_UNLIKELY(ec))
    release_range(image_.geometry(), pages_, first, last);
  else
    ledger_add(first, last);
  LLBM_SYNC_POINT("start_write:done");
  return ec;
}

void Bitmap::end_write(std::uint64_t offset, std::uint64_t length) {
  BitmapImpl& s = impl(*this);
  LLBM_CHECK(s.in_device(offset, length),
             "Bitmap %p: end_write(%llu, %llu) of a range start_write would refuse",
             static_cast<void*>(this), static_cast<unsigned long long>(offset),
             static_cast<unsigned long long>(length));
  LLBM_SYNC_POINT("end_write:before_release");
  const Geometry& geo = s.image_.geometry();
  const std::uint64_t first = geo.chunk_of(offset);
  const std::uint64_t last = geo.chunk_of(offset + length - 1);
  s.ledger_remove("end_write", offset, length, first, last);
  // As in start_write: one chunk tries the release without its slow path first.
  if (LLBM_UNLIKELY(first != last ||
                    !detail::PageBarrierFast::try_release(*s.pages_[geo.page_of_chunk(first)])))
    release_range(geo, s.pages_, first, last);
}

WriteGuard Bitmap::guard_write(std::uint64_t offset, std::uint64_t length, std::error_code& ec) {
  ec = start_write(offset, length);
  if (ec) return {};
  return WriteGuard(this, offset, length);  // NOLINT(modernize-return-braced-init-list)
}

std::error_code Bitmap::start_discard(std::uint64_t offset, std::uint64_t length) {
  BitmapImpl& s = impl(*this);
  if (!s.in_device(offset, length)) return std::make_error_code(std::errc::invalid_argument);
  if (s.closed()) return Errc::bitmap_closed;  // also when it covers no chunk
  std::uint64_t first = 0, last = 0;
  s.discard_chunks(offset, length, first, last);
  if (first > last) return {};  // no chunk fully covered: nothing to hold
  // acquire: pairs with Persister::enter_failed_state's release store.
  if (s.persister_.failing(std::memory_order_acquire)) return Errc::bitmap_failed;
  const Geometry& geo = s.image_.geometry();
  raise_range(geo, s.pages_, s.daemon_, first, last);
  // A discard that waited on a page close() had suspended: refuse it, as start_write
  // does (acquire: pairs with Persister::set_closed and enter_failed_state).
  if (const std::uint8_t refused = s.persister_.refused(std::memory_order_acquire); refused != 0) {
    release_range(geo, s.pages_, first, last);
    return BitmapImpl::refusal(refused);
  }
  s.ledger_add(first, last);
  // Unwritten is persisted lazily (as upstream): a stale Dirty/Clean on disk is safe.
  s.change_range(first, last, Action::kDiscard, s.context(), nullptr);
  return {};
}

void Bitmap::end_discard(std::uint64_t offset, std::uint64_t length) {
  BitmapImpl& s = impl(*this);
  LLBM_CHECK(s.in_device(offset, length),
             "Bitmap %p: end_discard of a range start_discard would refuse",
             static_cast<void*>(this));
  std::uint64_t first = 0, last = 0;
  s.discard_chunks(offset, length, first, last);
  if (first > last) return;
  s.ledger_remove("end_discard", offset, length, first, last);
  release_range(s.image_.geometry(), s.pages_, first, last);
}

// ------------------------------------------------------------------ resync side

bool Bitmap::start_sync(std::uint64_t offset) {
  return start_sync(offset, SyncKind::kResync);
}

bool Bitmap::start_sync(std::uint64_t offset, SyncKind kind) {
  BitmapImpl& s = impl(*this);
  const Geometry& geo = s.image_.geometry();
  LLBM_CHECK(offset < geo.device_bytes(), "Bitmap %p: start_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<unsigned long long>(offset));
  s.check_open("start_sync");
  return image_ops::start_sync(
      s.image_, geo.chunk_of(offset), kind, s.context(),
      [&s](std::uint64_t c, Action a, const TransitionContext& x) {
        return s.change_chunk(c, a, x);
      },
      // acquire: pairs with enter_failed_state's release.
      [&s] { return s.persister_.failing(std::memory_order_acquire); });
}

void Bitmap::end_sync(std::uint64_t offset) {
  BitmapImpl& s = impl(*this);
  const Geometry& geo = s.image_.geometry();
  LLBM_CHECK(offset < geo.device_bytes(), "Bitmap %p: end_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<unsigned long long>(offset));
  s.check_open("end_sync");
  const std::uint64_t c = geo.chunk_of(offset);
  if (s.change_chunk(c, Action::kEndsync, s.context()) != 0)
    s.pages_[geo.page_of_chunk(c)]->expire_now();  // let the daemon clean it
}

void Bitmap::abort_sync(std::uint64_t offset) {
  BitmapImpl& s = impl(*this);
  const Geometry& geo = s.image_.geometry();
  LLBM_CHECK(offset < geo.device_bytes(), "Bitmap %p: abort_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<unsigned long long>(offset));
  s.check_open("abort_sync");
  s.change_chunk(geo.chunk_of(offset), Action::kAbortsync, s.context());
}

void Bitmap::close_sync() {
  BitmapImpl& s = impl(*this);
  s.check_open("close_sync");
  s.change_range(0, s.image_.geometry().chunks() - 1, Action::kEndsync, s.context(), nullptr);
  for (auto& p : s.pages_) p->expire_now();
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> Bitmap::needs_sync() const {
  return image_ops::runs_where(impl(*this).image_,
                               [](ChunkState st) { return llbitmap::needs_sync(st); });
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> Bitmap::needs_recovery() const {
  // Dirty, NeedSync, Syncing (an invalid byte decodes as NeedSync).
  return image_ops::runs_where(impl(*this).image_, [](ChunkState st) { return is_dirty_like(st); });
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> Bitmap::needs_rebuild() const {
  return image_ops::runs_where(impl(*this).image_,
                               [](ChunkState st) { return st != ChunkState::kUnwritten; });
}

void Bitmap::set_degraded(bool degraded) {
  // relaxed: see BitmapImpl::degraded_.
  impl(*this).degraded_.store(degraded, std::memory_order_relaxed);
}

bool Bitmap::degraded() const noexcept {
  return impl(*this).degraded_.load(std::memory_order_relaxed);  // see BitmapImpl::degraded_
}

// ------------------------------------------------------------------ daemon side

void Bitmap::run_daemon_once() {
  BitmapImpl& s = impl(*this);
  s.check_open("run_daemon_once");
  (void)s.daemon_.pass(false);
}

std::error_code Bitmap::flush() {
  BitmapImpl& s = impl(*this);
  if (s.closed()) return Errc::bitmap_closed;
  if (std::error_code ec = s.daemon_.pass(true)) return ec;
  return s.persister_.persist_all();
}

std::error_code Bitmap::close() {
  BitmapImpl& s = impl(*this);
  // A close() that closed the bitmap, failed or not, is final: report what it returned.
  if (s.closed()) return s.close_error_;
  const Daemon::CloseResult r = s.daemon_.close();
  if (!r.drained) return r.ec;  // Errc::busy: still open and usable
  s.finish_close(r.ec);
  return r.ec;
}

void BitmapImpl::finish_close(std::error_code ec) noexcept {
  close_error_ = ec;
  closed_.store(true, std::memory_order_release);  // release: see closed()
  persister_.set_closed();
  // Daemon::close left every page suspended. Writers that passed start_write's entry
  // check before set_closed may be waiting on one: resume them all, so that each such
  // writer gets its raise, sees the refusal (mark_and_persist), releases and returns
  // Errc::bitmap_closed. A page stays open afterwards; nothing raises it for good again.
  for (auto& p : pages_) p->resume();
}

void BitmapImpl::check_open(const char* call) const noexcept {
  // relaxed: a misuse check only (see closed_).
  LLBM_CHECK(!closed_.load(std::memory_order_relaxed),
             "Bitmap %p: %s after close() (the resync calls and run_daemon_once need an open "
             "bitmap)",
             static_cast<const void*>(this), call);
}

#ifndef NDEBUG
void BitmapImpl::FreeDeleter::operator()(std::uint32_t* p) const noexcept {
  std::free(p);  // NOLINT(cppcoreguidelines-no-malloc): the deleter of the calloc above
}

void BitmapImpl::ledger_add(std::uint64_t first, std::uint64_t last) noexcept {
  // relaxed: see in_flight_.
  for (std::uint64_t c = first; c <= last; ++c)
    std::atomic_ref<std::uint32_t>(in_flight_[c]).fetch_add(1, std::memory_order_relaxed);
}

void BitmapImpl::ledger_remove(const char* call, std::uint64_t offset, std::uint64_t length,
                               std::uint64_t first, std::uint64_t last) noexcept {
  for (std::uint64_t c = first; c <= last; ++c) {
    // relaxed: see in_flight_.
    const std::uint32_t before =
        std::atomic_ref<std::uint32_t>(in_flight_[c]).fetch_sub(1, std::memory_order_relaxed);
    LLBM_CHECK(before != 0,
               "Bitmap %p: %s(%llu, %llu) without a matching start: chunk %llu has no write "
               "or discard in flight (an unmatched end would let the daemon clean the page "
               "under another write)",
               static_cast<void*>(this), call, static_cast<unsigned long long>(offset),
               static_cast<unsigned long long>(length), static_cast<unsigned long long>(c));
  }
}
#endif

// ------------------------------------------------------------------ queries and knobs

bool Bitmap::failed() const noexcept {
  return impl(*this).persister_.failed();
}

std::uint64_t Bitmap::events() const {
  // The superblock is only read here; superblock() has no const overload because every
  // other caller edits it under the same lock.
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): read only, under the lock
  ChunkImage& image = const_cast<BitmapImpl&>(impl(*this)).image_;
  detail::SpinLockGuard lock(image.superblock_lock());
  return image.superblock().events;
}

bool Bitmap::out_of_date() const noexcept {
  return impl(*this).out_of_date_;
}

std::uint64_t Bitmap::chunk_bytes() const noexcept {
  return impl(*this).image_.geometry().chunk_bytes();
}
std::uint64_t Bitmap::chunks() const noexcept {
  return impl(*this).image_.geometry().chunks();
}
std::uint64_t Bitmap::device_bytes() const noexcept {
  return impl(*this).image_.geometry().device_bytes();
}
const Geometry& Bitmap::geometry() const noexcept {
  return impl(*this).image_.geometry();
}

StateCounts Bitmap::counts() const {
  return image_ops::count_states(impl(*this).image_);
}

BitmapStats Bitmap::stats() const noexcept {
  const BitmapImpl& s = impl(*this);
  std::uint64_t raise_waits = 0, suspend_waits = 0;
  for (const auto& p : s.pages_) {
    const PageBarrier::Stats ps = p->stats();
    raise_waits += ps.raise_waits;
    suspend_waits += ps.suspend_waits;
  }
  return BitmapStats{s.persister_.rounds(),
                     s.persister_.blocks_written(),
                     s.persister_.waits(),
                     s.daemon_.passes(),
                     s.daemon_.pages_cleaned(),
                     s.daemon_.suspend_timeouts(),
                     s.invalid_bytes_,
                     s.bad_blocks_,
                     raise_waits,
                     suspend_waits,
                     s.daemon_.armed()};
}

std::error_code Bitmap::set_daemon_sleep(std::chrono::milliseconds d) {
  if (!interval_in_range(d)) return std::make_error_code(std::errc::invalid_argument);
  BitmapImpl& s = impl(*this);
  if (s.closed()) return Errc::bitmap_closed;
  s.daemon_.set_sleep(d);
  s.edit_superblock([d](Superblock& sb) { sb.daemon_sleep = d; });
  s.daemon_.wake();
  return {};
}

std::error_code Bitmap::set_barrier_idle(std::chrono::milliseconds d) {
  if (!interval_in_range(d)) return std::make_error_code(std::errc::invalid_argument);
  BitmapImpl& s = impl(*this);
  if (s.closed()) return Errc::bitmap_closed;
  for (auto& p : s.pages_) p->set_barrier_idle(d);
  s.edit_superblock([d](Superblock& sb) { sb.barrier_idle = d; });
  return {};
}

std::chrono::milliseconds Bitmap::daemon_sleep() const noexcept {
  return impl(*this).daemon_.sleep();
}

std::chrono::milliseconds Bitmap::barrier_idle() const noexcept {
  return impl(*this).pages_.front()->barrier_idle();
}

}  // namespace llbitmap
