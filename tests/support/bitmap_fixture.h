// SPDX-License-Identifier: LGPL-2.1-or-later
//
// bitmap_fixture.h: helpers for Bitmap tests over a FaultStorage.
//
// StorageView keeps a raw pointer to the FaultStorage a Bitmap owns, so a test can
// inject faults and read the durable image; `decode_durable` turns an image back into
// chunk states the way open() would (without the recovery actions) so the test can
// check exactly what a crash now would leave.
#pragma once

#include <llbitmap/bitmap.h>
#include <llbitmap/format.h>
#include <llbitmap/testing/fault_storage.h>

#include <memory>
#include <optional>
#include <vector>

#include "image_states.h"

namespace llbitmap::test {

struct BitmapUnderTest {
  std::unique_ptr<Bitmap> bitmap;
  FaultStorage* storage = nullptr;  // owned by bitmap
};

inline BitmapUnderTest make_bitmap(BitmapOptions opt, std::error_code& ec) {
  auto storage = std::make_unique<FaultStorage>();
  FaultStorage* raw = storage.get();
  auto bm = Bitmap::create(std::move(storage), opt, ec);
  return BitmapUnderTest{std::move(bm), raw};
}

// The chunk states an image holds, as stored (no Reload): nullopt for a chunk whose
// block fails its checksum. Requires a decodable superblock. (image_states.h)
inline std::vector<std::optional<std::uint8_t>> stored_states(const std::vector<std::byte>& file) {
  return image_states(file);
}

// Opens a copy of `file` (a crash image) with no daemon.
inline std::unique_ptr<Bitmap> reopen(const std::vector<std::byte>& file, std::error_code& ec,
                                      FaultStorage** storage_out = nullptr) {
  auto storage = std::make_unique<FaultStorage>(file);
  if (storage_out != nullptr) *storage_out = storage.get();
  OpenOptions oo;
  oo.start_daemon = false;
  return Bitmap::open(std::move(storage), oo, ec);
}

}  // namespace llbitmap::test
