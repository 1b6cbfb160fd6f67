// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Bitmap: creation, loading (crash recovery), the write path and the resync calls.
// Persistence is in bitmap_persist.cc, the daemon in bitmap_daemon.cc.
#include <llbitmap/bitmap.h>
#include <llbitmap/detail/check.h>
#include <llbitmap/recovery.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

#include "bitmap_internal.h"
#include "page_barrier_fast.h"
#include "sync_point.h"

namespace llbitmap {

namespace {

std::atomic_ref<std::uint8_t> byte_ref(std::uint8_t* image, std::uint64_t pos) noexcept {
  return std::atomic_ref<std::uint8_t>(image[pos]);
}

}  // namespace

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

// The contents of a new bitmap file for `options` (superblock, states, checksums).
std::vector<std::byte> fresh_contents(const BitmapOptions& options, std::error_code& ec) {
  FormatOptions fo;
  fo.device_bytes = options.device_bytes;
  fo.chunk_bytes = options.chunk_bytes;
  fo.space_bytes = options.space_bytes;
  fo.block_bytes = options.block_bytes;
  fo.daemon_sleep = options.daemon_sleep;
  fo.barrier_idle = options.barrier_idle;
  fo.assume_clean = options.assume_clean;
  fo.uuid = random_uuid();
  auto sb = make_superblock(fo, ec);
  if (!sb) return {};
  return build_fresh_file(
      *sb, to_byte(options.assume_clean ? ChunkState::kClean : ChunkState::kUnwritten));
}

OpenOptions open_options(const BitmapOptions& o) {
  return OpenOptions{o.start_daemon, o.parity, o.data_flush, o.clock};
}

}  // namespace

std::unique_ptr<Bitmap> Bitmap::create(const std::filesystem::path& path,
                                       const BitmapOptions& options, std::error_code& ec) {
  const std::vector<std::byte> contents = fresh_contents(options, ec);
  if (ec) return nullptr;
  auto storage = FileStorage::create(path, contents, ec);
  if (!storage) return nullptr;
  return load(std::move(storage), open_options(options), ec);
}

std::unique_ptr<Bitmap> Bitmap::create(std::unique_ptr<Storage> storage,
                                       const BitmapOptions& options, std::error_code& ec) {
  LLBM_CHECK(storage != nullptr, "Bitmap::create: null storage");
  const std::vector<std::byte> contents = fresh_contents(options, ec);
  if (ec) return nullptr;
  if ((ec = storage->write(0, contents))) return nullptr;
  if ((ec = storage->sync())) return nullptr;
  return load(std::move(storage), open_options(options), ec);
}

std::unique_ptr<Bitmap> Bitmap::open(const std::filesystem::path& path, std::error_code& ec) {
  return open(path, OpenOptions{}, ec);
}

std::unique_ptr<Bitmap> Bitmap::open(const std::filesystem::path& path, const OpenOptions& options,
                                     std::error_code& ec) {
  auto storage = FileStorage::open(path, ec);
  if (!storage) return nullptr;
  return load(std::move(storage), options, ec);
}

std::unique_ptr<Bitmap> Bitmap::open(std::unique_ptr<Storage> storage, const OpenOptions& options,
                                     std::error_code& ec) {
  LLBM_CHECK(storage != nullptr, "Bitmap::open: null storage");
  return load(std::move(storage), options, ec);
}

// Reads and validates the file, recovers the states, then makes the recovered states
// durable before the superblock stops saying "stale" (two syncs). A file refused here
// is never written.
std::unique_ptr<Bitmap> Bitmap::load(std::unique_ptr<Storage> storage, const OpenOptions& opt,
                                     std::error_code& ec) {
  ec.clear();
  std::uint64_t file_bytes = 0;
  if ((ec = storage->size(file_bytes))) return nullptr;
  std::vector<std::byte> head(std::min<std::uint64_t>(file_bytes, kSuperblockBytes));
  if (!head.empty() && (ec = storage->read(0, head))) return nullptr;
  auto sb = Superblock::decode(head, ec, file_bytes);
  if (!sb) return nullptr;
  const Geometry& g = sb->geometry;
  std::vector<std::byte> image(g.image_bytes());
  std::vector<std::byte> table(g.checksum_table_bytes());
  if ((ec = storage->read(0, image))) return nullptr;
  if ((ec = storage->read(g.checksum_table_offset(), table))) return nullptr;

  std::unique_ptr<Bitmap> bm(new Bitmap(std::move(storage), *sb, std::move(image), std::move(table),
                                        opt.parity, opt.data_flush, opt.clock));
  if ((ec = bm->persist_all())) return nullptr;
  {
    std::lock_guard lk(bm->block_lock(0));
    bm->sb_.state &= ~(kSbStale | kSbWriteError);
    bm->sb_.events += 1;
    bm->bump_block(0);
  }
  bm->enqueue_block(0);
  if ((ec = bm->persist_all())) return nullptr;
  if (opt.start_daemon) bm->start_daemon_thread();
  return bm;
}

Bitmap::Bitmap(std::unique_ptr<Storage> storage, const Superblock& sb, std::vector<std::byte> image,
               std::vector<std::byte> table, bool parity,
               std::function<std::error_code()> data_flush, Clock* clock)
    : geo_(sb.geometry),
      ok_category_(&std::system_category()),
      storage_(std::move(storage)),
      clock_(clock != nullptr ? clock : &Clock::system()),
      parity_(parity),
      data_flush_(std::move(data_flush)),
      image_(new std::uint8_t[sb.geometry.image_bytes()]),
      blocks_(new BlockCtl[sb.geometry.blocks()]),
      crc_(sb.geometry.blocks()),
      sb_(sb),
      daemon_sleep_ms_(sb.daemon_sleep.count()) {
  // Crash recovery (recovery.h): the stored bytes become the in-memory states.
  const RecoveryReport found = recover_chunk_states(sb, image, table);
  if (found.invalid_bytes != 0)
    std::fprintf(
        stderr,
        "llbitmap: invalid state byte 0x%02x for chunk %llu (%llu in all), forcing resync\n",
        found.first_invalid_byte, static_cast<unsigned long long>(found.first_invalid_chunk),
        static_cast<unsigned long long>(found.invalid_bytes));
  invalid_bytes_ = found.invalid_bytes;
  bad_blocks_ = found.bad_blocks.size();
  std::memcpy(image_.get(), image.data(), image.size());
  // Remember the checksums the file holds.
  for (std::uint64_t b = 0; b < geo_.blocks(); ++b) crc_[b] = stored_block_crc(geo_, table, b);
  // Everything is rewritten once at open (every block, a fresh checksum table).
  for (std::uint64_t b = 0; b < geo_.blocks(); ++b) {
    blocks_[b].dirty_seq.store(1, std::memory_order_relaxed);
    blocks_[b].queued = true;
    pending_blocks_.push_back(b);
  }
  change_seq_.store(1, std::memory_order_relaxed);
  pages_.reserve(geo_.pages());
  for (std::uint64_t p = 0; p < geo_.pages(); ++p)
    pages_.push_back(std::make_unique<PageBarrier>(*clock_, sb.barrier_idle));
  timeout_logged_.assign(geo_.pages(), false);
  // Reload leaves no chunk Dirty; count anyway, so the counts never depend on that.
  page_dirty_.reset(new std::atomic<std::uint32_t>[geo_.pages()]);
  for (std::uint64_t p = 0; p < geo_.pages(); ++p)
    page_dirty_[p].store(0, std::memory_order_relaxed);
  for (std::uint64_t c = 0; c < geo_.chunks(); ++c) {
    if (image_[geo_.chunk_pos(c)] == to_byte(ChunkState::kDirty)) {
      page_dirty_[geo_.page_of_chunk(c)].fetch_add(1, std::memory_order_relaxed);
      armed_.store(true, std::memory_order_relaxed);
    }
  }
}

Bitmap::~Bitmap() {
  if (!closed_.load(std::memory_order_acquire)) {
    const std::error_code ec = close();
    LLBM_CHECK(ec != Errc::busy,
               "Bitmap %p: destroyed with a write still in flight (call end_write first)",
               static_cast<void*>(this));
  }
}

// ------------------------------------------------------------------ helpers

TransitionContext Bitmap::context() const noexcept {
  TransitionContext ctx;
  ctx.degraded = degraded_.load(std::memory_order_relaxed);
  ctx.parity = parity_;
  ctx.write_error = failed_.load(std::memory_order_relaxed);
  return ctx;
}

ChunkState Bitmap::state(std::uint64_t chunk) const noexcept {
  LLBM_CHECK(chunk < geo_.chunks(), "Bitmap %p: chunk %llu past the end (%llu chunks)",
             static_cast<const void*>(this), static_cast<unsigned long long>(chunk),
             static_cast<unsigned long long>(geo_.chunks()));
  return decode_state(load_byte(geo_.chunk_pos(chunk)));
}

std::mutex& Bitmap::block_lock(std::uint64_t block) const noexcept {
  return stripes_[block % kStripes];
}

void Bitmap::discard_chunks(std::uint64_t offset, std::uint64_t length, std::uint64_t& first,
                            std::uint64_t& last) const noexcept {
  // Only chunks the discard covers completely (kernel: DIV_ROUND_UP for the start); the
  // device's last chunk counts as covered when the discard reaches the end.
  const unsigned shift = geo_.chunk_shift();
  const std::uint64_t end = offset + length;
  first = (offset + geo_.chunk_bytes() - 1) >> shift;
  const std::uint64_t stop = (end == geo_.device_bytes() ? geo_.chunks() : end >> shift);
  if (first >= stop) {
    first = 1;
    last = 0;  // nothing covered
    return;
  }
  last = stop - 1;
}

namespace {

// Raises (or releases) the page barriers of chunks [first, last], ascending. Out of
// line: the write path's one-chunk case uses PageBarrierFast::try_raise/try_release
// instead, and keeping these calls out of it lets it run without saving a register.
using PageList = std::vector<std::unique_ptr<PageBarrier>>;
[[gnu::noinline]] void raise_range(const Geometry& g, const PageList& pages, std::uint64_t first,
                                   std::uint64_t last) noexcept {
  for (std::uint64_t p = g.page_of_chunk(first); p <= g.page_of_chunk(last); ++p)
    detail::PageBarrierFast::raise(*pages[p]);
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

void Bitmap::note_dirty() noexcept {
  // seq_cst: with the seq_cst increment of the page's count before it, this pairs with
  // daemon_pass's seq_cst clear of armed_ and its seq_cst loads of the counts
  // (store-buffering): either the pass sees this page's count or this load sees armed_
  // cleared and re-arms. (Not fences: GCC's ThreadSanitizer does not support them.)
  if (armed_.load(std::memory_order_seq_cst)) return;
  armed_.store(true, std::memory_order_relaxed);
  std::lock_guard lk(daemon_mu_);
  daemon_cv_.notify_all();
}

// Requires: the block's stripe lock. Returns the new change number.
std::uint64_t Bitmap::bump_block(std::uint64_t block) noexcept {
  const std::uint64_t seq = change_seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  // release: ordered before the byte stores that follow it (see bitmap_internal.h).
  blocks_[block].dirty_seq.store(seq, std::memory_order_release);
  return seq;
}

std::uint64_t Bitmap::change_chunk(std::uint64_t chunk, Action action,
                                   const TransitionContext& ctx) {
  const std::uint64_t pos = geo_.chunk_pos(chunk);
  const std::uint64_t block = geo_.block_of_chunk(chunk);
  std::uint64_t seq = 0;
  {
    std::lock_guard lk(block_lock(block));
    auto ref = byte_ref(image_.get(), pos);
    const std::uint8_t old = ref.load(std::memory_order_relaxed);
    const Transition t = apply_action(old, action, ctx);
    if (!t.changed() || to_byte(t.next) == old) return 0;
    seq = bump_block(block);
    ref.store(to_byte(t.next), std::memory_order_release);
    const std::uint64_t page = geo_.page_of_chunk(chunk);
    if (old == to_byte(ChunkState::kDirty))
      page_dirty_[page].fetch_sub(1, std::memory_order_relaxed);
    if (t.next == ChunkState::kDirty) {
      page_dirty_[page].fetch_add(1, std::memory_order_seq_cst);  // see note_dirty
      note_dirty();
    }
  }
  enqueue_block(block);
  return seq;
}

namespace {

// Which bytes `action` changes in context `ctx`. For a long range (a daemon pass over a
// page, close_sync) the answer for all 256 byte values is computed once, so the scan
// costs a load and a table lookup per chunk; a short range asks the table directly.
class ChangeTable {
 public:
  ChangeTable(Action action, const TransitionContext& ctx, std::uint64_t chunks) noexcept
      : action_(action), ctx_(ctx), cached_(chunks >= 256) {
    if (!cached_) return;
    for (unsigned raw = 0; raw < 256; ++raw)
      changes_[raw] = compute(static_cast<std::uint8_t>(raw));
  }
  // True if the action changes a chunk whose byte is `raw`.
  [[nodiscard]] bool changes(std::uint8_t raw) const noexcept {
    return cached_ ? changes_[raw] : compute(raw);
  }

 private:
  [[nodiscard]] bool compute(std::uint8_t raw) const noexcept {
    const Transition t = apply_action(raw, action_, ctx_);
    return t.changed() && to_byte(t.next) != raw;
  }
  Action action_;
  TransitionContext ctx_;
  bool cached_;
  bool changes_[256] = {};
};

}  // namespace

// Applies `action` to every chunk of [first, last]; when `targets` is given, collects
// each touched block with the change number that must be durable: the block's latest,
// loaded after every byte of the block was (acquire), so it covers this call's changes
// and every change whose byte the scan saw. Walks block by block so that a daemon pass
// over a page of 4096 chunks costs a few instructions per chunk that stays as it is.
std::uint64_t Bitmap::change_range(std::uint64_t first, std::uint64_t last, Action action,
                                   const TransitionContext& ctx, std::vector<Target>* targets) {
  const ChangeTable table(action, ctx, last - first + 1);
  std::uint64_t changed = 0;
  std::uint64_t c = first;
  while (c <= last) {
    const std::uint64_t block = geo_.block_of_chunk(c);
    const std::uint64_t stop = std::min(last, geo_.chunks_in_block(block).end - 1);
    for (; c <= stop; ++c) {
      const std::uint8_t raw = load_byte(geo_.chunk_pos(c));
      if (!table.changes(raw)) continue;
      changed += change_chunk(c, action, ctx) != 0 ? 1 : 0;
    }
    if (targets == nullptr) continue;
    const std::uint64_t seq = blocks_[block].dirty_seq.load(std::memory_order_acquire);
    if (!targets->empty() && targets->back().block == block)
      targets->back().seq = std::max(targets->back().seq, seq);
    else
      targets->push_back(Target{block, seq});
  }
  return changed;
}

// ------------------------------------------------------------------ write path

std::error_code Bitmap::mark_and_persist(std::uint64_t first, std::uint64_t last, Action action) {
  const TransitionContext ctx = context();
  // Failed since start_write's entry check: the transition table ignores every action
  // now, so nothing would be marked; never report such a write as covered.
  if (LLBM_UNLIKELY(ctx.write_error)) return Errc::bitmap_failed;
  std::vector<Target> targets;
  change_range(first, last, action, ctx, &targets);
  return persist_targets(targets.data(), targets.size());
}

// The states Startwrite leaves as they are, whatever the context (degraded and parity
// only change what Unwritten and Clean become): a write to such a chunk needs no mark,
// only the durability check.
namespace {
constexpr bool startwrite_keeps(std::uint8_t raw) noexcept {
  return raw == to_byte(ChunkState::kDirty) || raw == to_byte(ChunkState::kNeedSync) ||
         raw == to_byte(ChunkState::kSyncing);
}
constexpr bool startwrite_keeps_matches_table() {
  for (unsigned raw = 0; raw < 256; ++raw) {
    for (const TransitionContext ctx : {TransitionContext{}, TransitionContext{.degraded = true},
                                        TransitionContext{.parity = true}}) {
      const bool keeps =
          !apply_action(static_cast<std::uint8_t>(raw), Action::kStartwrite, ctx).changed();
      if (keeps != startwrite_keeps(static_cast<std::uint8_t>(raw))) return false;
    }
  }
  return true;
}
static_assert(startwrite_keeps_matches_table(),
              "startwrite_keeps() must agree with the state table in every context");
}  // namespace

// The fast path (one chunk, already Dirty or NeedSync, durably so): bounds, the failed
// flag, one raise, one byte, the block's two change numbers. No lock, no store but the
// raise's own, no call. Everything else goes to start_write_slow with the pages raised.
std::error_code Bitmap::start_write(std::uint64_t offset, std::uint64_t length) {
  LLBM_DCHECK(!closed_.load(std::memory_order_relaxed), "Bitmap %p: start_write after close",
              static_cast<void*>(this));
  if (LLBM_UNLIKELY(!in_device(offset, length))) return invalid_range();
  const std::uint64_t first = geo_.chunk_of(offset);
  const std::uint64_t last = geo_.chunk_of(offset + length - 1);
  if (LLBM_UNLIKELY(failed_.load(std::memory_order_acquire))) return Errc::bitmap_failed;
#ifdef LLBM_SYNC_POINTS
  if (detail::test_hooks().mark_before_raise.load(std::memory_order_relaxed)) {
    // The order upstream shipped before ef4ca3d4bf09, kept only so that tests can show
    // their checkers catch it: the daemon can clean the chunk between mark and raise.
    std::vector<Target> targets;
    change_range(first, last, Action::kStartwrite, context(), &targets);
    LLBM_SYNC_POINT("start_write:after_mark");
    raise_range(geo_, pages_, first, last);
    const std::error_code ec = persist_targets(targets.data(), targets.size());
    if (ec) release_range(geo_, pages_, first, last);
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
                    !detail::PageBarrierFast::try_raise(*pages_[geo_.page_of_chunk(first)])))
    return start_write_raise(first, last);
  LLBM_SYNC_POINT("start_write:after_raise");
  // relaxed failed_: as in mark_and_persist, a failure since the entry check must not
  // report the write as covered; the acquire load of the byte orders what follows.
  if (LLBM_LIKELY(startwrite_keeps(load_byte(geo_.chunk_pos(first))) &&
                  !failed_.load(std::memory_order_relaxed))) {
    const BlockCtl& b = blocks_[geo_.block_of_chunk(first)];
    const std::uint64_t seq = b.dirty_seq.load(std::memory_order_acquire);
    if (LLBM_LIKELY(b.durable_seq.load(std::memory_order_acquire) >= seq)) {
      LLBM_SYNC_POINT("start_write:done");
      return std::error_code(0, *ok_category_);
    }
  }
  return start_write_slow(first, last);
}

std::error_code Bitmap::start_write_raise(std::uint64_t first, std::uint64_t last) {
  raise_range(geo_, pages_, first, last);
  LLBM_SYNC_POINT("start_write:after_raise");
  return start_write_slow(first, last);
}

std::error_code Bitmap::start_write_slow(std::uint64_t first, std::uint64_t last) {
  const std::error_code ec = mark_and_persist(first, last, Action::kStartwrite);
  if (LLBM_UNLIKELY(ec)) release_range(geo_, pages_, first, last);
  LLBM_SYNC_POINT("start_write:done");
  return ec;
}

void Bitmap::end_write(std::uint64_t offset, std::uint64_t length) {
  LLBM_CHECK(in_device(offset, length),
             "Bitmap %p: end_write(%llu, %llu) of a range start_write would refuse",
             static_cast<void*>(this), static_cast<unsigned long long>(offset),
             static_cast<unsigned long long>(length));
  LLBM_SYNC_POINT("end_write:before_release");
  const std::uint64_t first = geo_.chunk_of(offset);
  const std::uint64_t last = geo_.chunk_of(offset + length - 1);
  // As in start_write: one chunk tries the release without its slow path first.
  if (LLBM_UNLIKELY(first != last ||
                    !detail::PageBarrierFast::try_release(*pages_[geo_.page_of_chunk(first)])))
    release_range(geo_, pages_, first, last);
}

WriteGuard Bitmap::guard_write(std::uint64_t offset, std::uint64_t length, std::error_code& ec) {
  ec = start_write(offset, length);
  if (ec) return {};
  return WriteGuard(this, offset, length);
}

std::error_code Bitmap::start_discard(std::uint64_t offset, std::uint64_t length) {
  if (!in_device(offset, length)) return std::make_error_code(std::errc::invalid_argument);
  std::uint64_t first = 0, last = 0;
  discard_chunks(offset, length, first, last);
  if (first > last) return {};  // no chunk fully covered: nothing to hold
  if (failed_.load(std::memory_order_acquire)) return Errc::bitmap_failed;
  raise_range(geo_, pages_, first, last);
  // Unwritten is persisted lazily (as upstream): a stale Dirty/Clean on disk is safe.
  change_range(first, last, Action::kDiscard, context(), nullptr);
  return {};
}

void Bitmap::end_discard(std::uint64_t offset, std::uint64_t length) {
  LLBM_CHECK(in_device(offset, length),
             "Bitmap %p: end_discard of a range start_discard would refuse",
             static_cast<void*>(this));
  std::uint64_t first = 0, last = 0;
  discard_chunks(offset, length, first, last);
  if (first > last) return;
  release_range(geo_, pages_, first, last);
}

// ------------------------------------------------------------------ resync side

bool Bitmap::start_sync(std::uint64_t offset) {
  LLBM_CHECK(offset < geo_.device_bytes(), "Bitmap %p: start_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<unsigned long long>(offset));
  const std::uint64_t c = geo_.chunk_of(offset);
  change_chunk(c, Action::kStartsync, context());
  return state(c) == ChunkState::kSyncing;
}

void Bitmap::end_sync(std::uint64_t offset) {
  LLBM_CHECK(offset < geo_.device_bytes(), "Bitmap %p: end_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<unsigned long long>(offset));
  const std::uint64_t c = geo_.chunk_of(offset);
  if (change_chunk(c, Action::kEndsync, context()) != 0)
    pages_[geo_.page_of_chunk(c)]->expire_now();  // let the daemon clean it
}

void Bitmap::abort_sync(std::uint64_t offset) {
  LLBM_CHECK(offset < geo_.device_bytes(), "Bitmap %p: abort_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<unsigned long long>(offset));
  change_chunk(geo_.chunk_of(offset), Action::kAbortsync, context());
}

void Bitmap::close_sync() {
  change_range(0, geo_.chunks() - 1, Action::kEndsync, context(), nullptr);
  for (auto& p : pages_) p->expire_now();
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> Bitmap::needs_sync() const {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
  const std::uint64_t dev = geo_.device_bytes();
  for (std::uint64_t c = 0; c < geo_.chunks(); ++c) {
    if (!llbitmap::needs_sync(decode_state(load_byte(geo_.chunk_pos(c))))) continue;
    const std::uint64_t off = geo_.chunk_offset(c);
    const std::uint64_t len = std::min(geo_.chunk_bytes(), dev - off);
    if (!runs.empty() && runs.back().first + runs.back().second == off)
      runs.back().second += len;
    else
      runs.emplace_back(off, len);
  }
  return runs;
}

void Bitmap::set_degraded(bool degraded) {
  degraded_.store(degraded, std::memory_order_relaxed);
}

bool Bitmap::degraded() const noexcept {
  return degraded_.load(std::memory_order_relaxed);
}

StateCounts Bitmap::counts() const {
  StateCounts n{0, 0, 0, 0, 0};
  for (std::uint64_t c = 0; c < geo_.chunks(); ++c) {
    switch (decode_state(load_byte(geo_.chunk_pos(c)))) {
      case ChunkState::kUnwritten:
        ++n.unwritten;
        break;
      case ChunkState::kClean:
        ++n.clean;
        break;
      case ChunkState::kDirty:
        ++n.dirty;
        break;
      case ChunkState::kSyncing:
        ++n.syncing;
        break;
      case ChunkState::kNeedSync:
      case ChunkState::kNone:
        ++n.need_sync;
        break;
    }
  }
  return n;
}

BitmapStats Bitmap::stats() const noexcept {
  std::uint64_t raise_waits = 0, suspend_waits = 0;
  for (const auto& p : pages_) {
    const PageBarrier::Stats s = p->stats();
    raise_waits += s.raise_waits;
    suspend_waits += s.suspend_waits;
  }
  return BitmapStats{persist_rounds_.load(std::memory_order_relaxed),
                     blocks_written_.load(std::memory_order_relaxed),
                     persist_waits_.load(std::memory_order_relaxed),
                     daemon_passes_.load(std::memory_order_relaxed),
                     pages_cleaned_.load(std::memory_order_relaxed),
                     suspend_timeouts_.load(std::memory_order_relaxed),
                     invalid_bytes_,
                     bad_blocks_,
                     raise_waits,
                     suspend_waits,
                     armed_.load(std::memory_order_relaxed)};
}

std::error_code Bitmap::set_daemon_sleep(std::chrono::milliseconds d) {
  if (!interval_in_range(d)) return std::make_error_code(std::errc::invalid_argument);
  daemon_sleep_ms_.store(d.count(), std::memory_order_relaxed);
  {
    std::lock_guard lk(block_lock(0));
    sb_.daemon_sleep = d;
    bump_block(0);
  }
  enqueue_block(0);
  std::lock_guard lk(daemon_mu_);
  daemon_cv_.notify_all();
  return {};
}

std::error_code Bitmap::set_barrier_idle(std::chrono::milliseconds d) {
  if (!interval_in_range(d)) return std::make_error_code(std::errc::invalid_argument);
  for (auto& p : pages_) p->set_barrier_idle(d);
  {
    std::lock_guard lk(block_lock(0));
    sb_.barrier_idle = d;
    bump_block(0);
  }
  enqueue_block(0);
  return {};
}

std::chrono::milliseconds Bitmap::daemon_sleep() const noexcept {
  return std::chrono::milliseconds(daemon_sleep_ms_.load(std::memory_order_relaxed));
}

std::chrono::milliseconds Bitmap::barrier_idle() const noexcept {
  return pages_.front()->barrier_idle();
}

}  // namespace llbitmap
