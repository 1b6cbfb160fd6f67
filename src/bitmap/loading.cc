// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Making and opening a bitmap file, shared by both drivers (loading.h).
#include "loading.h"

#include <llbitmap/recovery.h>

#include <cstdio>
#include <utility>

namespace llbitmap {

// The superblock's form of a DeviceUuid.
Uuid to_uuid(const DeviceUuid& d) noexcept {
  Uuid u{};
  for (std::size_t i = 0; i < u.size(); ++i) u[i] = static_cast<std::byte>(d[i]);
  return u;
}

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
  fo.device_uuid = to_uuid(options.device_uuid);
  auto sb = make_superblock(fo, ec);
  if (!sb) return {};
  return build_fresh_file(
      *sb, to_byte(options.assume_clean ? ChunkState::kClean : ChunkState::kUnwritten));
}

// Crash recovery of the stored image (the disk layer's one rule, recovery.h), plus the
// checksums the file holds (the persister's starting point).
Recovered recover(const Superblock& sb, std::vector<std::byte> image,
                  std::span<const std::byte> table, std::uint64_t min_events) {
  const Geometry& g = sb.geometry;
  Recovered r;
  const bool out_of_date = min_events != 0 && sb.events < min_events;
  const RecoveryReport found = recover_chunk_states(sb, image, table, out_of_date);
  if (found.out_of_date)
    std::fprintf(stderr,
                 "llbitmap: bitmap out of date (events %llu, older than the %llu the engine "
                 "recorded), every chunk needs a resync\n",
                 static_cast<unsigned long long>(sb.events),
                 static_cast<unsigned long long>(min_events));
  if (found.invalid_bytes != 0)
    std::fprintf(
        stderr,
        "llbitmap: invalid state byte 0x%02x for chunk %llu (%llu in all), forcing resync\n",
        found.first_invalid_byte, static_cast<unsigned long long>(found.first_invalid_chunk),
        static_cast<unsigned long long>(found.invalid_bytes));
  r.out_of_date = found.out_of_date;
  r.invalid_bytes = found.invalid_bytes;
  r.bad_blocks = found.bad_blocks.size();
  r.crc.resize(g.blocks());
  for (std::uint64_t b = 0; b < g.blocks(); ++b) r.crc[b] = stored_block_crc(g, table, b);
  r.image = std::move(image);
  return r;
}

PageList make_pages(std::uint64_t n, Clock& clock, std::chrono::milliseconds idle) {
  PageList pages;
  pages.reserve(n);
  for (std::uint64_t p = 0; p < n; ++p) pages.push_back(std::make_unique<PageBarrier>(clock, idle));
  return pages;
}

bool identity_matches(const Superblock& sb, const DeviceUuid& device) noexcept {
  const Uuid d = to_uuid(device);
  return d == Uuid{} || sb.device_uuid == Uuid{} || sb.device_uuid == d;
}

}  // namespace llbitmap
