// SPDX-License-Identifier: LGPL-2.1-or-later
//
// ChunkImage: the shared in-memory image (see chunk_image.h for the contract).
#include "chunk_image.h"

#include <llbitmap/detail/check.h>

#include <bit>
#include <cstring>

namespace llbitmap {

ChunkImage::ChunkImage(const Superblock& sb, std::span<const std::byte> image)
    : geo_(sb.geometry),
      uuid_(sb.uuid),
      bytes_(new std::uint8_t[sb.geometry.image_bytes()]),
      blocks_(new BlockSeq[sb.geometry.blocks()]),
      covered_(new std::atomic<std::uint64_t>[sb.geometry.image_bytes() / 64]),
      taken_(new std::uint64_t[sb.geometry.image_bytes() / 64]()),
      page_dirty_(new std::atomic<std::uint32_t>[sb.geometry.pages()]),
      sb_(sb) {
  LLBM_CHECK(image.size() == geo_.image_bytes(), "ChunkImage: image of %zu bytes, expected %llu",
             image.size(), static_cast<unsigned long long>(geo_.image_bytes()));
  std::memcpy(bytes_.get(), image.data(), image.size());
  // Everything is rewritten once at open: every block starts at change number 1, which
  // no round has made durable yet (the Persister queues them all).
  for (std::uint64_t b = 0; b < geo_.blocks(); ++b)
    blocks_[b].dirty_seq.store(1, std::memory_order_relaxed);
  // Nothing is durably covered before the first round: the file may hold other bytes
  // than the image recovered from it.
  for (std::uint64_t w = 0; w < geo_.image_bytes() / 64; ++w)
    covered_[w].store(0, std::memory_order_relaxed);
  // relaxed: no other thread sees the object before its construction is published.
  for (std::uint64_t p = 0; p < geo_.pages(); ++p)
    page_dirty_[p].store(0, std::memory_order_relaxed);
  // Reload leaves no chunk Dirty; count anyway, so the counts never depend on that.
  for (std::uint64_t c = 0; c < geo_.chunks(); ++c) {
    if (bytes_[geo_.chunk_pos(c)] == to_byte(ChunkState::kDirty)) {
      page_dirty_[geo_.page_of_chunk(c)].fetch_add(1, std::memory_order_relaxed);
      dirty_at_open_ = true;
    }
  }
}

std::uint64_t ChunkImage::bump_block([[maybe_unused]] detail::SpinLock& held,
                                     std::uint64_t block) noexcept {
  LLBM_DCHECK(&held == &block_lock(block),
              "ChunkImage %p: block %llu changed under another block's stripe lock",
              static_cast<void*>(this), static_cast<unsigned long long>(block));
  // relaxed: the number only has to be unique and increasing per block; the block's
  // stripe lock orders the changes of one block.
  const std::uint64_t seq = change_seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  // release: ordered before the byte stores that follow it; pairs with the acquire load
  // in dirty_seq() (see the contract in chunk_image.h).
  blocks_[block].dirty_seq.store(seq, std::memory_order_release);
  return seq;
}

ChunkImage::Change ChunkImage::change_chunk(std::uint64_t chunk, Action action,
                                            const TransitionContext& ctx) noexcept {
  const std::uint64_t pos = geo_.chunk_pos(chunk);
  const std::uint64_t block = geo_.block_of_chunk(chunk);
  detail::SpinLock& mu = block_lock(block);
  detail::SpinLockGuard lock(mu);
  std::atomic_ref<std::uint8_t> ref(bytes_[pos]);
  // relaxed: every store to this byte happens under the lock we hold.
  const std::uint8_t old = ref.load(std::memory_order_relaxed);
  const Transition t = apply_action(old, action, ctx);
  if (!t.changed() || to_byte(t.next) == old) return {};
  Change change;
  change.seq = bump_block(mu, block);
  // release: pairs with the acquire in load_byte (the change number is stored first).
  ref.store(to_byte(t.next), std::memory_order_release);
  const std::uint64_t page = geo_.page_of_chunk(chunk);
  // relaxed decrement: a count that is still high only makes a pass look at the page.
  if (old == to_byte(ChunkState::kDirty)) page_dirty_[page].fetch_sub(1, std::memory_order_relaxed);
  if (t.next == ChunkState::kDirty) {
    // seq_cst: the first half of the store-buffering pair with the daemon's re-arm check
    // (the caller then loads the armed flag, seq_cst; Daemon::pass clears the flag and
    // then loads the counts, both seq_cst), so one of the two sides sees the other.
    page_dirty_[page].fetch_add(1, std::memory_order_seq_cst);
    change.dirtied = true;
  }
  return change;
}

std::uint64_t ChunkImage::snapshot_block(std::uint64_t block, std::span<std::byte> buf) noexcept {
  const std::uint32_t bs = geo_.block_bytes();
  LLBM_DCHECK(buf.size() == bs, "ChunkImage %p: snapshot buffer of %zu bytes",
              static_cast<void*>(this), buf.size());
  detail::SpinLock& mu = block_lock(block);
  detail::SpinLockGuard lock(mu);
  // relaxed: read under the lock every change of the block holds.
  const std::uint64_t seq = blocks_[block].dirty_seq.load(std::memory_order_relaxed);
  // Every store to these bytes happens under this lock, so a plain copy is exact.
  std::memcpy(buf.data(), bytes_.get() + block * bs, bs);
  take_bits(mu, block, seq, buf);
  if (block == 0) {
    superblock_lock().assert_held();  // mu is stripes_[0]
    sb_.encode(std::span<std::byte, kSuperblockBytes>(buf.data(), kSuperblockBytes));
  }
  return seq;
}

void ChunkImage::dirty_like_bits(std::span<const std::byte> bytes,
                                 std::span<std::uint64_t> bits) noexcept {
  LLBM_DCHECK(bytes.size() == bits.size() * 64, "ChunkImage: %zu words of bits for %zu bytes",
              bits.size(), bytes.size());
  // Eight bytes at a time: a byte is dirty-like when it is neither 0 (Unwritten) nor 1
  // (Clean), that is when a bit other than its lowest is set (is_dirty_like; checked
  // against it in chunk_image_test). The high bit of each byte of `any` says so; the
  // multiply gathers those eight high bits (byte k's at bit 8k + 7, shifted by 7 (7 - k))
  // into the top byte, byte k's at bit 56 + k.
  constexpr std::uint64_t kLow7 = 0x7f7f7f7f7f7f7f7fULL;
  constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
  constexpr std::uint64_t kGather = 0x0002040810204081ULL;
  for (std::size_t w = 0; w < bits.size(); ++w) {
    std::uint64_t word = 0;
    for (std::size_t k = 0; k < 8; ++k) {
      std::uint64_t x = 0;
      std::memcpy(&x, bytes.data() + w * 64 + k * 8, 8);
      if constexpr (std::endian::native == std::endian::big) x = __builtin_bswap64(x);
      const std::uint64_t y = x & ~0x0101010101010101ULL;             // drop each byte's low bit
      const std::uint64_t any = (((y & kLow7) + kLow7) | y) & kHigh;  // byte != 0
      word |= ((any * kGather) >> 56) << (k * 8);
    }
    bits[w] = word;
  }
}

void ChunkImage::take_bits([[maybe_unused]] detail::SpinLock& held, std::uint64_t block,
                           std::uint64_t seq, std::span<const std::byte> buf) noexcept {
  LLBM_DCHECK(&held == &block_lock(block),
              "ChunkImage %p: block %llu copied under another block's stripe lock",
              static_cast<void*>(this), static_cast<unsigned long long>(block));
  const std::size_t words = geo_.block_bytes() / 64;
  std::uint64_t* taken = taken_.get() + block * words;
  dirty_like_bits(buf, std::span<std::uint64_t>(taken, words));
  blocks_[block].taken_seq = seq;
  for (std::size_t w = 0; w < words; ++w) {
    const std::size_t i = block * words + w;
    // relaxed: every store happens under this lock.
    store_covered(i, covered_[i].load(std::memory_order_relaxed) & taken[w]);
  }
}

void ChunkImage::store_covered(std::size_t i, std::uint64_t bits) noexcept {
  // A word that does not change is not stored, so the writes that read it keep their
  // cache line (relaxed load: every store happens under the block's stripe lock, which
  // the caller holds). release: a set bit is read (acquire) only after the sync that made
  // it durable; clearing needs none, but one order for every store is simpler.
  if (covered_[i].load(std::memory_order_relaxed) != bits)
    covered_[i].store(bits, std::memory_order_release);
}

void ChunkImage::publish_durable(std::uint64_t block, std::uint64_t seq) noexcept {
  detail::SpinLockGuard lock(block_lock(block));
  BlockSeq& b = blocks_[block];
  // relaxed: every store happens under this lock.
  if (b.durable_seq.load(std::memory_order_relaxed) >= seq) return;
  // release: pairs with the acquire load in durable_seq.
  b.durable_seq.store(seq, std::memory_order_release);
  if (seq != b.taken_seq) return;  // a newer snapshot may still land: keep the bits narrow
  const std::size_t words = geo_.block_bytes() / 64;
  for (std::size_t i = block * words; i < (block + 1) * words; ++i) store_covered(i, taken_[i]);
}

void ChunkImage::mark_superblock_and_snapshot(std::uint32_t flags,
                                              std::span<std::byte> buf) noexcept {
  const std::uint32_t bs = geo_.block_bytes();
  LLBM_DCHECK(buf.size() == bs, "ChunkImage %p: snapshot buffer of %zu bytes",
              static_cast<void*>(this), buf.size());
  detail::SpinLockGuard lock(stripes_[0]);
  sb_.state |= flags;
  std::memcpy(buf.data(), bytes_.get(), bs);
  // This copy may land too: it narrows the covered bits like any snapshot.
  take_bits(stripes_[0], 0, blocks_[0].dirty_seq.load(std::memory_order_relaxed), buf);
  sb_.encode(std::span<std::byte, kSuperblockBytes>(buf.data(), kSuperblockBytes));
}

bool ChunkImage::any_page_dirty() const noexcept {
  // seq_cst: the second half of the store-buffering pair (see change_chunk).
  for (std::uint64_t p = 0; p < geo_.pages(); ++p)
    if (page_dirty_[p].load(std::memory_order_seq_cst) != 0) return true;
  return false;
}

}  // namespace llbitmap
