// SPDX-License-Identifier: LGPL-2.1-or-later
//
// crash_images.h: the images a disk could hold after a power cut, built from a durable
// image and the list of writes not yet covered by a sync (what FaultStorage's sync hook
// sees in its SyncEvent, or unsynced_writes() outside a hook).
//
// The model is the one dm-log-writes, CrashMonkey and ALICE use for a block device with
// a volatile cache and atomic 512-byte sectors: any subset of the unsynced writes may
// have reached the medium, in any order, and any one of them may have landed only in
// part, sector by sector (or 4 KiB page by page). The enumerator produces:
//
//   kDurable        nothing of the unsynced writes;
//   kSubset         every subset, applied in issue order, while there are at most
//                   `exhaustive_writes` writes (2^6 by default); beyond that a sample:
//                   every prefix, every "all but one", plus `samples` random subsets;
//   kReordered      all writes in reverse issue order (differs from kSubset only where
//                   writes overlap);
//   kOmitKeepLater  ALICE's ordering exploration: write i omitted, the later writes up
//                   to j kept (no sync separates them);
//   kTorn512/4096   each single write torn at 512 B / 4 KiB: half of its units landed
//                   (even units, odd units, first half, second half) on top of nothing,
//                   of every write issued before it, or of every other write.
//
// Selections that give the same image by construction (the same set of pairwise
// disjoint writes, in whatever order) are produced once. build_crash_image() applies a
// selection exactly as FaultStorage::crash_image() does (tested), so images built in a
// hook match what the storage itself would give.
//
// Everything here is pure and single-threaded; a hook may call it (it never touches the
// FaultStorage).
#pragma once

#include <llbitmap/testing/fault_storage.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llbitmap::test {

enum class CrashKind { kDurable, kSubset, kReordered, kOmitKeepLater, kTorn512, kTorn4096 };

inline std::string_view to_string(CrashKind k) {
  switch (k) {
    case CrashKind::kDurable:
      return "durable";
    case CrashKind::kSubset:
      return "subset";
    case CrashKind::kReordered:
      return "reordered";
    case CrashKind::kOmitKeepLater:
      return "omit-keep-later";
    case CrashKind::kTorn512:
      return "torn-512";
    case CrashKind::kTorn4096:
      return "torn-4096";
  }
  return "?";
}

// Which unsynced writes landed, in which order, and which one (if any) landed in part.
struct CrashSelection {
  CrashKind kind = CrashKind::kDurable;
  std::vector<std::size_t> order;  // indices into the pending list, applied in this order
  std::optional<TornWrite> torn;   // applied last

  [[nodiscard]] std::string describe() const {
    std::string s(to_string(kind));
    s += " [";
    for (std::size_t i = 0; i < order.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(order[i]);
    }
    s += ']';
    if (torn) {
      s += " torn #" + std::to_string(torn->index) + "@" + std::to_string(torn->granularity) + ":";
      for (bool u : torn->units) s += u ? '1' : '0';
    }
    return s;
  }
};

struct CrashImageOptions {
  std::size_t exhaustive_writes = 6;  // every subset up to 2^this
  std::size_t samples = 64;           // random subsets beyond that
  bool torn_on_durable = true;        // tear each write on the bare durable image too
};

namespace detail_crash {

inline void apply(std::vector<std::byte>& image, std::uint64_t offset,
                  std::span<const std::byte> data) {
  if (data.empty()) return;
  const std::uint64_t end = offset + data.size();
  if (end > image.size()) image.resize(end, std::byte{0});
  std::copy(data.begin(), data.end(), image.begin() + static_cast<std::ptrdiff_t>(offset));
}

inline bool overlap(const PendingWrite& a, const PendingWrite& b) {
  return a.offset < b.offset + b.data.size() && b.offset < a.offset + a.data.size();
}

// Number of `g`-aligned units the write spans.
inline std::size_t units(const PendingWrite& w, std::uint64_t g) {
  if (w.data.empty()) return 0;
  const std::uint64_t first = w.offset / g;
  const std::uint64_t last = (w.offset + w.data.size() - 1) / g;
  return static_cast<std::size_t>(last - first + 1);
}

}  // namespace detail_crash

// Calls fn(offset, bytes) for each unit of the torn write that lands, in order; stops
// and returns false as soon as fn does.
template <class Fn>
inline bool for_each_landed_unit(const PendingWrite& w, const TornWrite& torn, Fn&& fn) {
  const std::uint64_t g = torn.granularity;
  const std::uint64_t end = w.offset + w.data.size();
  std::size_t unit = 0;
  for (std::uint64_t start = w.offset / g * g; start < end; start += g, ++unit) {
    if (unit >= torn.units.size() || !torn.units[unit]) continue;
    const std::uint64_t from = std::max(start, w.offset);
    const std::uint64_t to = std::min(start + g, end);
    if (!fn(from, std::span<const std::byte>(w.data).subspan(from - w.offset, to - from)))
      return false;
  }
  return true;
}

// The image for one selection: `durable`, then the selected writes in order, then the
// torn write's landed units (as FaultStorage::crash_image).
inline std::vector<std::byte> build_crash_image(std::span<const std::byte> durable,
                                                std::span<const PendingWrite> pending,
                                                const CrashSelection& sel) {
  std::vector<std::byte> image(durable.begin(), durable.end());
  for (std::size_t i : sel.order) detail_crash::apply(image, pending[i].offset, pending[i].data);
  if (sel.torn) {
    for_each_landed_unit(pending[sel.torn->index], *sel.torn,
                         [&](std::uint64_t from, std::span<const std::byte> bytes) {
                           detail_crash::apply(image, from, bytes);
                           return true;
                         });
  }
  return image;
}

// The selections described at the top of this file, without duplicates. `rng` drives
// the sampling beyond the exhaustive bound only.
inline std::vector<CrashSelection> crash_selections(std::span<const PendingWrite> pending,
                                                    const CrashImageOptions& opt,
                                                    std::mt19937_64& rng) {
  const std::size_t n = pending.size();
  std::vector<CrashSelection> out;
  std::set<std::string> seen;
  // Two orders of pairwise disjoint writes give the same image: key them as a set.
  auto add = [&](CrashKind kind, std::vector<std::size_t> order,
                 std::optional<TornWrite> torn = std::nullopt) {
    bool disjoint = true;
    for (std::size_t a = 0; a < order.size() && disjoint; ++a)
      for (std::size_t b = a + 1; b < order.size() && disjoint; ++b)
        disjoint = !detail_crash::overlap(pending[order[a]], pending[order[b]]);
    std::vector<std::size_t> key_order = order;
    if (disjoint) std::sort(key_order.begin(), key_order.end());
    std::string key;
    for (std::size_t i : key_order) key += std::to_string(i) + ',';
    if (torn) {
      key += "t" + std::to_string(torn->index) + "@" + std::to_string(torn->granularity) + ":";
      for (bool u : torn->units) key += u ? '1' : '0';
    }
    if (!seen.insert(key).second) return;
    out.push_back(CrashSelection{kind, std::move(order), std::move(torn)});
  };

  add(CrashKind::kDurable, {});
  if (n == 0) return out;

  // (b) subsets in issue order.
  auto from_mask = [&](std::uint64_t mask) {
    std::vector<std::size_t> v;
    for (std::size_t i = 0; i < n; ++i)
      if (mask >> i & 1) v.push_back(i);
    return v;
  };
  if (n <= opt.exhaustive_writes && n < 63) {
    for (std::uint64_t mask = 1; mask < (std::uint64_t{1} << n); ++mask)
      add(CrashKind::kSubset, from_mask(mask));
  } else {
    for (std::size_t k = 1; k <= n; ++k) {  // prefixes
      std::vector<std::size_t> v(k);
      for (std::size_t i = 0; i < k; ++i) v[i] = i;
      add(CrashKind::kSubset, std::move(v));
    }
    for (std::size_t s = 0; s < opt.samples; ++s) {
      std::vector<std::size_t> v;
      for (std::size_t i = 0; i < n; ++i)
        if (rng() & 1) v.push_back(i);
      add(CrashKind::kSubset, std::move(v));
    }
  }
  // (c) reordered: everything in reverse; ALICE: omit i, keep the later ones up to j.
  {
    std::vector<std::size_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = n - 1 - i;
    add(CrashKind::kReordered, std::move(v));
  }
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = i + 1; j < n; ++j) {
      std::vector<std::size_t> v;
      for (std::size_t k = 0; k <= j; ++k)
        if (k != i) v.push_back(k);
      add(CrashKind::kOmitKeepLater, std::move(v));
    }
  }
  // (d) torn writes: half of the units, in alternating and split patterns.
  for (std::size_t i = 0; i < n; ++i) {
    for (std::uint64_t g : {std::uint64_t{512}, std::uint64_t{4096}}) {
      const std::size_t u = detail_crash::units(pending[i], g);
      if (u < 2) continue;  // one unit: landed or not, covered by the subsets
      std::vector<std::vector<bool>> patterns(4, std::vector<bool>(u, false));
      for (std::size_t k = 0; k < u; ++k) {
        patterns[0][k] = k % 2 == 0;
        patterns[1][k] = k % 2 == 1;
        patterns[2][k] = k < (u + 1) / 2;
        patterns[3][k] = k >= (u + 1) / 2;
      }
      const CrashKind kind = g == 512 ? CrashKind::kTorn512 : CrashKind::kTorn4096;
      std::vector<std::size_t> before;
      for (std::size_t k = 0; k < i; ++k) before.push_back(k);
      std::vector<std::size_t> others;
      for (std::size_t k = 0; k < n; ++k)
        if (k != i) others.push_back(k);
      for (const auto& p : patterns) {
        if (opt.torn_on_durable || before.empty()) add(kind, {}, TornWrite{i, g, p});
        if (!before.empty()) add(kind, before, TornWrite{i, g, p});
        if (others.size() > before.size()) add(kind, others, TornWrite{i, g, p});
      }
    }
  }
  return out;
}

}  // namespace llbitmap::test
