// SPDX-License-Identifier: LGPL-2.1-or-later
//
// histogram.h: a log-linear latency histogram for llbitmap-uring-mirror. Values (in
// nanoseconds) below 32 have a bucket each; above, every power of two is split into 16
// buckets, so a percentile is within about 3 % of the value it stands for. One per
// reactor thread (no sharing, no atomics); merged on the main thread at the end.
// now_ns() is the clock every latency it records is read from.
#pragma once

#include <array>
#include <bit>
#include <chrono>
#include <cstdint>

namespace llbitmap::uring_mirror {

// The steady clock in nanoseconds.
inline std::uint64_t now_ns() noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

class Histogram {
 public:
  void record(std::uint64_t ns) noexcept {
    ++buckets_[index(ns)];
    ++count_;
  }
  void merge(const Histogram& other) noexcept {
    for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
    count_ += other.count_;
  }
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  // The value at quantile q (0 < q <= 1): the middle of the bucket that holds the
  // ceil(q * count)-th smallest value. 0 when empty.
  [[nodiscard]] std::uint64_t quantile(double q) const noexcept {
    if (count_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_));
    if (static_cast<double>(rank) < q * static_cast<double>(count_)) ++rank;
    if (rank == 0) rank = 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
      seen += buckets_[i];
      if (seen >= rank) return middle(i);
    }
    return middle(buckets_.size() - 1);
  }

 private:
  static constexpr unsigned kSubBits = 5;  // 32 exact buckets, then 16 per power of two
  static constexpr std::size_t kBuckets = 1024;

  static std::size_t index(std::uint64_t v) noexcept {
    if (v < (std::uint64_t{1} << kSubBits)) return static_cast<std::size_t>(v);
    const unsigned msb = 63 - static_cast<unsigned>(std::countl_zero(v));
    const unsigned e = msb - (kSubBits - 1);  // >= 1
    return static_cast<std::size_t>(e) * (1u << (kSubBits - 1)) + static_cast<std::size_t>(v >> e);
  }
  static std::uint64_t middle(std::size_t i) noexcept {
    if (i < (std::size_t{1} << kSubBits)) return i;
    const std::size_t half = std::size_t{1} << (kSubBits - 1);
    const std::size_t e = i / half - 1;
    const std::uint64_t m = i - e * half;
    return (m << e) + ((std::uint64_t{1} << e) >> 1);
  }

  std::array<std::uint64_t, kBuckets> buckets_{};
  std::uint64_t count_ = 0;
};

}  // namespace llbitmap::uring_mirror
