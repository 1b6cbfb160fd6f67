// SPDX-License-Identifier: LGPL-2.1-or-later
//
// workload.h: OffsetPicker, where the writes of llbitmap-uring-mirror go (--workload).
// Reactor index `i` of `n` (Shared::reactors) owns its share of the device's 4 KiB
// blocks: by block number modulo n (kUniform, kHot) or one slice (kSeq), so no two
// reactors write the same block; kFirst hands out one chunk after the other from a
// counter shared by all. Within one picker a block that is still in flight is picked
// again (up to 64 tries), so the two legs never see two writes of one block in different
// orders. The reactors (engine.cc) have one picker each; --mode blocking (blocking.cc)
// has one per group of `iodepth` worker threads, behind the group's lock, so both modes
// write the same offsets in the same order per share.
//
// Threads: a picker is used by one thread at a time; only kFirst's counter
// (Shared::next_chunk) is shared.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "engine.h"

namespace llbitmap::uring_mirror {

class OffsetPicker {
 public:
  OffsetPicker(Shared& shared, unsigned index)
      : s_(shared), index_(index), rng_(0x9e3779b97f4a7c15ULL * (index + 1)) {}

  // The next write's offset into `off`. `in_flight(off)` says whether a write of this
  // share is in flight at `off`. False when kFirst has handed out every chunk.
  template <typename InFlight>
  bool pick(std::uint64_t& off, const InFlight& in_flight) {
    const std::uint64_t blocks = s_.device_bytes / kBlock;
    const std::uint64_t n = s_.reactors;
    const std::uint64_t mine = std::max<std::uint64_t>(1, blocks / n);
    switch (s_.workload) {
      case Workload::kFirst: {
        // relaxed: a ticket; the chunk's bytes are published by nothing but the write.
        const std::uint64_t c = s_.next_chunk.fetch_add(1, std::memory_order_relaxed);
        if (c >= s_.device_bytes / s_.chunk_bytes) return false;
        off = c * s_.chunk_bytes;
        return true;
      }
      case Workload::kSeq: {
        const std::uint64_t first = index_ * mine;
        for (unsigned tries = 0;; ++tries) {
          off = (first + seq_next_) * kBlock;
          seq_next_ = (seq_next_ + 1) % mine;
          if (!in_flight(off) || tries > 64) return true;
        }
      }
      case Workload::kUniform:
      case Workload::kHot:
        break;
    }
    const std::uint64_t hot = std::max<std::uint64_t>(1, (blocks / 100) / n);
    for (unsigned tries = 0;; ++tries) {
      const bool in_hot = s_.workload == Workload::kHot && rand() % 10 != 0;  // 90 %
      const std::uint64_t k = rand() % (in_hot ? hot : mine);
      std::uint64_t block = index_ + n * k;
      if (block >= blocks) block = index_ % blocks;
      off = block * kBlock;
      if (!in_flight(off) || tries > 64) return true;
    }
  }

 private:
  std::uint64_t rand() noexcept {  // xorshift64*
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    return rng_ * 0x2545f4914f6cdd1dULL;
  }

  Shared& s_;
  const unsigned index_;
  std::uint64_t rng_;
  std::uint64_t seq_next_ = 0;  // kSeq: the next block of this share's slice
};

}  // namespace llbitmap::uring_mirror
