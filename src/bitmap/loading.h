// SPDX-License-Identifier: LGPL-2.1-or-later
//
// loading.h: what both drivers of the bitmap core do to make a new file and to open a
// stored one: the bytes of a fresh file, the identity check, crash recovery of the stored
// image with the checksums the file holds, and one page barrier per page.
//
// Contract: pure apart from the page barriers' clock subscriptions and the log lines
// recover() writes to stderr for an out-of-date file or invalid state bytes; no IO.
#pragma once

#include <llbitmap/bitmap.h>
#include <llbitmap/clock.h>
#include <llbitmap/format.h>
#include <llbitmap/page_barrier.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

namespace llbitmap {

using PageList = std::vector<std::unique_ptr<PageBarrier>>;

// The superblock's form of a DeviceUuid.
[[nodiscard]] Uuid to_uuid(const DeviceUuid& d) noexcept;

// The contents of a new bitmap file for `options` (superblock, states, checksums); empty
// with ec set for a bad option.
std::vector<std::byte> fresh_contents(const BitmapOptions& options, std::error_code& ec);

// True if a file bound to `sb.device_uuid` may be opened for `device` (all zero on either
// side: not checked); else open refuses it with Errc::foreign_bitmap.
[[nodiscard]] bool identity_matches(const Superblock& sb, const DeviceUuid& device) noexcept;

// What open recovered from the stored image.
struct Recovered {
  std::vector<std::byte> image;     // the image with the recovered states
  std::vector<std::uint32_t> crc;   // the checksum the file holds for every block
  std::uint64_t invalid_bytes = 0;  // state bytes that were not a state
  std::uint64_t bad_blocks = 0;     // blocks whose checksum failed
  bool out_of_date = false;         // events below OpenOptions::min_events: all NeedSync
};

// Crash recovery of the stored image (the disk layer's one rule, recovery.h), plus the
// checksums the file holds (the persist planning's starting point).
Recovered recover(const Superblock& sb, std::vector<std::byte> image,
                  std::span<const std::byte> table, std::uint64_t min_events);

// One PageBarrier per page.
PageList make_pages(std::uint64_t n, Clock& clock, std::chrono::milliseconds idle);

}  // namespace llbitmap
