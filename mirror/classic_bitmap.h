// SPDX-License-Identifier: LGPL-2.1-or-later
//
// classic_bitmap.h: ClassicBitmap, the peer of the write path in the benchmarks
// (BM_ClassicBitmapWrite, docs/design.md#performance-targets) and the mirror's kClassic
// mode: the write-intent bitmap md used before llbitmap
// (drivers/md/md-bitmap.c: md_bitmap_startwrite / md_bitmap_endwrite /
// md_bitmap_daemon_work / md_bitmap_unplug), reimplemented without IO.
//
// What it models:
//   - One lock for the whole bitmap (the kernel's bitmap->counts.lock, a spinlock taken
//     with interrupts off; here a detail::Mutex). Every start_write and every end_write
//     takes it once per chunk, so all writers on all CPUs share one cache line.
//   - A 16-bit counter per chunk (bitmap_counter_t), in counter pages of 2048 that are
//     allocated the first time one of their chunks is written (md_bitmap_checkpage;
//     the kernel drops the lock to allocate and can "hijack" the page pointer when
//     memory is short, neither of which is modelled). Bit 15 is NEEDED (a write failed:
//     the chunk needs resync), bit 14 RESYNC, bits 0-13 the count:
//         0       the chunk's bit is clear on disk
//         1       bit set, no write pending, the next daemon pass clears it
//         2       bit set, no write pending, the next daemon pass moves it to 1
//         2 + n   bit set, n writes pending
//     The first write to a chunk at 0 sets its bit in the in-memory image of the bitmap
//     file (bit number chunk + 2048: the first 256 bytes hold the superblock) and marks
//     that 4 KiB file page dirty; the caller must unplug() (write the dirty pages) before
//     issuing the data write, as raid1 does in flush_pending_writes(). A write that
//     finds the count at 1 or 2 just raises it: the bit is already set on disk.
//     A count at COUNTER_MAX makes the writer wait (overflow_wait).
//   - end_write lowers the count; when it drops to 2 or below the chunk's counter page
//     is marked pending so that the daemon looks at it.
//   - daemon_pass() is md_bitmap_daemon_work's cleaning: 2 -> 1, then on the next pass
//     1 -> 0 with the bit cleared and the file page marked for writeback. So a chunk goes
//     clean only after two passes without writes.
// What it leaves out: the IO itself (unplug() and daemon_pass() only count the pages
// they would write), resync (start_sync/end_sync), behind writes, clustering, the
// superblock and events counter.
//
// Threads: every member may be called from any thread; all of them take the one lock.
// start_write blocks only while a chunk's count is at COUNTER_MAX.
#pragma once

#include <llbitmap/detail/mutex.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace llbitmap::bench {

class ClassicBitmap {
 public:
  using Counter = std::uint16_t;                                           // bitmap_counter_t
  static constexpr Counter kNeeded = 0x8000;                               // NEEDED_MASK
  static constexpr Counter kResync = 0x4000;                               // RESYNC_MASK
  static constexpr Counter kCounterMax = 0x3fff;                           // COUNTER_MAX
  static constexpr std::size_t kCountersPerPage = 4096 / sizeof(Counter);  // PAGE_COUNTER_RATIO
  static constexpr std::uint64_t kFilePageBits = 4096 * 8;
  static constexpr std::uint64_t kSuperblockBits = 256 * 8;  // sizeof(bitmap_super_t)

  ClassicBitmap(std::uint64_t device_bytes, std::uint64_t chunk_bytes)
      : chunk_bytes_(chunk_bytes),
        chunks_((device_bytes + chunk_bytes - 1) / chunk_bytes),
        counter_pages_((chunks_ + kCountersPerPage - 1) / kCountersPerPage),
        file_bits_((kSuperblockBits + chunks_ + 63) / 64, 0),
        file_pages_((kSuperblockBits + chunks_ + kFilePageBits - 1) / kFilePageBits) {}

  ClassicBitmap(const ClassicBitmap&) = delete;
  ClassicBitmap& operator=(const ClassicBitmap&) = delete;

  // md_bitmap_startwrite: one pending write more on every chunk of [offset, offset+length).
  void start_write(std::uint64_t offset, std::uint64_t length) {
    for (std::uint64_t c = first_chunk(offset); c <= last_chunk(offset, length); ++c) {
      detail::MutexLock lk(mu_);
      Counter* bmc = get_counter(c);
      while ((*bmc & kCounterMax) == kCounterMax) {
        overflow_wait_.wait(mu_);
        bmc = get_counter(c);
      }
      switch (*bmc) {
        case 0:
          file_set_bit(c);  // md_bitmap_file_set_bit: the page is now dirty
          ++counter_pages_[c / kCountersPerPage].count;  // md_bitmap_count_page
          [[fallthrough]];
        case 1:
          *bmc = 2;
          break;
        default:
          break;
      }
      ++*bmc;
    }
  }

  // md_bitmap_endwrite: the write ended; `success` false marks the chunks NEEDED.
  void end_write(std::uint64_t offset, std::uint64_t length, bool success = true) {
    for (std::uint64_t c = first_chunk(offset); c <= last_chunk(offset, length); ++c) {
      detail::MutexLock lk(mu_);
      Counter* bmc = get_counter(c);
      if (!success && (*bmc & kNeeded) == 0) *bmc |= kNeeded;
      if ((*bmc & kCounterMax) == kCounterMax) overflow_wait_.notify_all();
      --*bmc;
      if (*bmc <= 2) {
        counter_pages_[c / kCountersPerPage].pending = true;  // md_bitmap_set_pending
        all_clean_ = false;
      }
    }
  }

  // md_bitmap_unplug without IO: takes the dirty marks of the file pages and returns how
  // many pages would be written before the data writes may go.
  std::size_t unplug() {
    detail::MutexLock lk(mu_);
    std::size_t n = 0;
    for (auto& p : file_pages_) {
      if (p.dirty || p.need_write) ++n;
      p.dirty = p.need_write = false;
    }
    return n;
  }

  // One pass of md_bitmap_daemon_work's cleaning; returns the file pages it would write.
  std::size_t daemon_pass() {
    detail::MutexLock lk(mu_);
    if (all_clean_) return 0;
    all_clean_ = true;
    for (std::size_t pg = 0; pg < counter_pages_.size(); ++pg) {
      CounterPage& cp = counter_pages_[pg];
      if (!cp.pending) continue;
      cp.pending = false;
      if (!cp.map) continue;
      for (std::size_t i = 0; i < kCountersPerPage; ++i) {
        const std::uint64_t c = pg * kCountersPerPage + i;
        if (c >= chunks_) break;
        Counter& bmc = cp.map[i];
        if (bmc == 1) {
          bmc = 0;
          --cp.count;
          file_clear_bit(c);  // the page is written by this pass
        } else if (bmc != 0 && bmc <= 2) {
          bmc = 1;
          cp.pending = true;
          all_clean_ = false;
        }
      }
    }
    std::size_t n = 0;
    for (auto& p : file_pages_) {
      if (p.need_write) ++n;
      p.need_write = false;
    }
    return n;
  }

  // Inspection (tests and benchmark setup).
  [[nodiscard]] Counter counter(std::uint64_t chunk) const {
    detail::MutexLock lk(mu_);
    const CounterPage& cp = counter_pages_[chunk / kCountersPerPage];
    return cp.map ? cp.map[chunk % kCountersPerPage] : Counter{0};
  }
  [[nodiscard]] bool bit(std::uint64_t chunk) const {
    detail::MutexLock lk(mu_);
    const std::uint64_t b = kSuperblockBits + chunk;
    return (file_bits_[b / 64] >> (b % 64)) & 1;
  }
  [[nodiscard]] std::uint64_t chunks() const noexcept { return chunks_; }
  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept { return chunk_bytes_; }

 private:
  struct CounterPage {  // struct bitmap_page
    std::unique_ptr<Counter[]> map;
    std::uint32_t count = 0;  // non-zero counters in the page
    bool pending = false;     // the daemon should look at it
  };
  struct FilePage {           // the page attributes of bitmap->storage.filemap_attr
    bool dirty = false;       // BITMAP_PAGE_DIRTY: a bit was set
    bool need_write = false;  // BITMAP_PAGE_NEEDWRITE: a bit was cleared
  };

  std::uint64_t first_chunk(std::uint64_t offset) const noexcept { return offset / chunk_bytes_; }
  std::uint64_t last_chunk(std::uint64_t offset, std::uint64_t length) const noexcept {
    return std::min(chunks_ - 1, (offset + std::max<std::uint64_t>(length, 1) - 1) / chunk_bytes_);
  }

  // md_bitmap_get_counter with create=1 (md_bitmap_checkpage allocates the page).
  Counter* get_counter(std::uint64_t chunk) LLBM_REQUIRES(mu_) {
    CounterPage& cp = counter_pages_[chunk / kCountersPerPage];
    if (!cp.map) cp.map = std::make_unique<Counter[]>(kCountersPerPage);
    return &cp.map[chunk % kCountersPerPage];
  }
  void file_set_bit(std::uint64_t chunk) LLBM_REQUIRES(mu_) {
    const std::uint64_t b = kSuperblockBits + chunk;
    file_bits_[b / 64] |= std::uint64_t{1} << (b % 64);
    file_pages_[b / kFilePageBits].dirty = true;
  }
  void file_clear_bit(std::uint64_t chunk) LLBM_REQUIRES(mu_) {
    const std::uint64_t b = kSuperblockBits + chunk;
    file_bits_[b / 64] &= ~(std::uint64_t{1} << (b % 64));
    file_pages_[b / kFilePageBits].need_write = true;
  }

  const std::uint64_t chunk_bytes_;
  const std::uint64_t chunks_;
  mutable detail::Mutex mu_;  // bitmap->counts.lock
  detail::CondVar overflow_wait_;
  std::vector<CounterPage> counter_pages_ LLBM_GUARDED_BY(mu_);
  std::vector<std::uint64_t> file_bits_ LLBM_GUARDED_BY(mu_);  // image of the bitmap file
  std::vector<FilePage> file_pages_ LLBM_GUARDED_BY(mu_);
  bool all_clean_ LLBM_GUARDED_BY(mu_) = true;
};

}  // namespace llbitmap::bench
