// SPDX-License-Identifier: LGPL-2.1-or-later
//
// meta_disk.h: MetaDisk, the bitmap file of a ReactorBitmap test as a disk would hold
// it: a FaultStorage (volatile and durable bytes, injected write and sync failures)
// behind an interface that names no FaultStorage type.
//
// The storage and the crash-image enumeration of crash_images.h live in meta_disk.cc,
// compiled once for every test that uses them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace llbitmap::test {

// One image a disk could hold after a power cut now, and how it was built.
struct CrashImage {
  std::string what;  // "durable", "subset [0,2]", "torn #1@512:1010", ...
  std::vector<std::byte> bytes;
};

// Which crash images crash_images() builds (crash_images.h: CrashImageOptions).
struct CrashImageLimits {
  std::size_t exhaustive_writes = 6;  // every subset of the unsynced writes up to 2^this
  std::size_t samples = 64;           // random subsets beyond that
  bool torn = true;                   // each write torn at 512 B and 4 KiB as well
  bool quick = false;                 // only the durable image and every write landed
};

class MetaDisk {
 public:
  // The file starts durable as `initial` (ReactorBitmap::format's bytes, or a crash image).
  explicit MetaDisk(std::vector<std::byte> initial);
  ~MetaDisk();
  MetaDisk(const MetaDisk&) = delete;
  MetaDisk& operator=(const MetaDisk&) = delete;

  // The storage calls (FaultStorage semantics: a failed sync drops its writes from the
  // durable future, reads still see them).
  std::error_code write(std::uint64_t offset, std::span<const std::byte> data);
  std::error_code sync();

  // The k-th write or sync from now (k = 1: the next) fails with EIO.
  void fail_write(std::uint64_t k);
  void fail_sync(std::uint64_t k);

  [[nodiscard]] std::vector<std::byte> durable_image() const;
  [[nodiscard]] std::vector<std::byte> volatile_image() const;
  [[nodiscard]] std::size_t unsynced_writes() const;
  [[nodiscard]] std::uint64_t writes() const;  // write calls so far
  [[nodiscard]] std::uint64_t syncs() const;   // sync calls so far

  // Every image a crash now could leave (the durable image first): subsets of the
  // unsynced writes, reordered, ALICE's omit-one-keep-later, torn writes.
  [[nodiscard]] std::vector<CrashImage> crash_images(const CrashImageLimits& limits,
                                                     std::mt19937_64& rng) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llbitmap::test
