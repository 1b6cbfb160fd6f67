// SPDX-License-Identifier: LGPL-2.1-or-later
//
// fuzz_open.h: the property checker behind the open() fuzz target (docs/testing.md#fuzzing)
// and its seed corpus. fuzz_open.cc proves, for any bytes given to it, that
// Superblock::decode and Bitmap::open either refuse them with a typed error code and
// leave the storage untouched, or accept them and recover a consistent bitmap:
//
//   - decode: an accepted superblock re-encodes to the same 256 bytes; decode with the
//     file size refuses exactly when decode without it refuses, or with size_mismatch;
//   - open accepts exactly what decode (with the file size) accepts, with the same code
//     when it refuses, and writes nothing to a refused file;
//   - every chunk's state after open is the one recovery must give: Init's state for
//     every chunk of a never-initialised file (kSbFirstUse, whatever else it says), else
//     NeedSync for a chunk in a block whose checksum fails, else Reload (or Stale for a
//     stale or failed superblock) applied to the byte on disk; so no chunk of an
//     initialised file becomes Clean or Unwritten unless it was durably so in a block
//     that verifies (docs/design.md#s4), none is Dirty or Syncing, and an invalid byte
//     is NeedSync;
//   - counts() sums to chunks() and matches state(); the invalid-byte and bad-block
//     counters match the image;
//   - needs_sync() runs are chunk-aligned, inside the device, sorted, disjoint, and cover
//     exactly the NeedSync/Syncing chunks;
//   - the durable image after open decodes, every block verifies, the superblock is no
//     longer stale, events went up by one, and every state byte is a valid state equal to
//     the in-memory one;
//   - close() succeeds (a busy with no write in flight, which a slow grace period can
//     cause, is retried: see close_idle() in fuzz_open.cc), and opening the closed image
//     again changes no chunk.
//
// A violated property prints what was expected and aborts (a crash for libFuzzer, a
// failure for the regression runner).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace llbitmap::fuzz {

struct CheckResult {
  bool accepted = false;  // the input itself (not a repaired variant) was opened
  unsigned variants = 0;  // inputs checked: the input plus its repaired variants
  unsigned variants_accepted = 0;
};

// Checks `input` and up to two variants of it: with the superblock checksum recomputed,
// and with the checksum table recomputed too (so that random bytes reach the geometry
// checks and the recovery code behind the checksums). Aborts on a violated property.
CheckResult check_open_input(std::span<const std::byte> input);

// Where violation messages go (default: stderr). The libFuzzer driver points it at a
// copy of stderr taken before libFuzzer closes the original (-close_fd_mask=2).
void set_report_fd(int fd);

// The seed corpus: (file name, contents) of valid bitmap images, fresh and used, of a
// few geometries with block_bytes 512 and 4096, including a stale one, one with a block
// whose checksum fails and one with an invalid state byte. Deterministic (fixed uuids).
// Every image whose name starts with "seed-" must open.
std::vector<std::pair<std::string, std::vector<std::byte>>> make_seed_corpus();

}  // namespace llbitmap::fuzz
