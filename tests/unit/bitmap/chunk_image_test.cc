// SPDX-License-Identifier: LGPL-2.1-or-later
//
// ChunkImage::dirty_like_bits, the eight-bytes-at-a-time computation of the covered bits
// (docs/design.md#write-ahead-ordering), against is_dirty_like for every byte value at
// every position of a word, amid neighbours of every kind.
#include "chunk_image.h"

#include <llbitmap/chunk_state.h>

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace llbitmap {
namespace {

bool bit(const std::vector<std::uint64_t>& bits, std::size_t i) {
  return ((bits[i / 64] >> (i % 64)) & 1) != 0;
}

TEST(ChunkImageTest, DirtyLikeBitsAgreeWithIsDirtyLikeForEveryByteAtEveryPosition) {
  constexpr std::size_t kBytes = 128;  // two words
  std::mt19937_64 rng(7);
  std::vector<std::uint64_t> bits(kBytes / 64);
  for (int background = 0; background < 4; ++background) {
    std::array<std::byte, kBytes> bytes{};
    for (std::size_t i = 0; i < kBytes; ++i) {
      // All clean-like, all dirty-like, all 0xff, or random neighbours.
      const std::uint8_t v = background == 0   ? 1
                             : background == 1 ? 2
                             : background == 2 ? 0xff
                                               : static_cast<std::uint8_t>(rng());
      bytes[i] = std::byte{v};
    }
    for (std::size_t pos = 0; pos < kBytes; ++pos) {
      const std::byte saved = bytes[pos];
      for (unsigned v = 0; v < 256; ++v) {
        bytes[pos] = std::byte{static_cast<std::uint8_t>(v)};
        ChunkImage::dirty_like_bits(bytes, bits);
        for (std::size_t i = 0; i < kBytes; ++i) {
          const bool want = is_dirty_like(static_cast<ChunkState>(bytes[i]));
          ASSERT_EQ(bit(bits, i), want) << "byte " << i << " = " << static_cast<unsigned>(bytes[i])
                                        << " (byte " << pos << " set to " << v << ")";
        }
      }
      bytes[pos] = saved;
    }
  }
}

}  // namespace
}  // namespace llbitmap
