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
#include <span>
#include <string>
#include <system_error>
#include <utility>
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

// A Storage that forwards to a FaultStorage it shares with the test, so that the test
// can still look at the medium after Bitmap::open refused it (and destroyed its Storage).
class SharedStorage final : public Storage {
 public:
  explicit SharedStorage(std::shared_ptr<FaultStorage> inner) : inner_(std::move(inner)) {}
  std::error_code read(std::uint64_t o, std::span<std::byte> out) override {
    return inner_->read(o, out);
  }
  std::error_code write(std::uint64_t o, std::span<const std::byte> d) override {
    return inner_->write(o, d);
  }
  std::error_code sync() override { return inner_->sync(); }
  std::error_code size(std::uint64_t& b) override { return inner_->size(b); }

 private:
  std::shared_ptr<FaultStorage> inner_;
};

// Opens a copy of `file` for another device than the one it is bound to: true if open
// refused it with Errc::foreign_bitmap and wrote nothing. `what` gets the reason when not.
inline bool refused_as_foreign(const std::vector<std::byte>& file, const DeviceUuid& other,
                               std::string& what) {
  auto medium = std::make_shared<FaultStorage>(file);
  OpenOptions oo;
  oo.start_daemon = false;
  oo.device_uuid = other;
  std::error_code ec;
  std::unique_ptr<Bitmap> b = Bitmap::open(std::make_unique<SharedStorage>(medium), oo, ec);
  if (b) {
    (void)b->close();
    what = "opened for another device";
    return false;
  }
  if (ec != Errc::foreign_bitmap) {
    what = "refused for another device with '" + ec.message() + "'";
    return false;
  }
  if (medium->durable_image() != file || !medium->unsynced_writes().empty()) {
    what = "refused for another device, yet written";
    return false;
  }
  return true;
}

// Opens a copy of `file` (a crash image) with no daemon, for `device` (all zero: not
// checked).
inline std::unique_ptr<Bitmap> reopen(const std::vector<std::byte>& file, std::error_code& ec,
                                      FaultStorage** storage_out = nullptr,
                                      const DeviceUuid& device = {}) {
  auto storage = std::make_unique<FaultStorage>(file);
  if (storage_out != nullptr) *storage_out = storage.get();
  OpenOptions oo;
  oo.start_daemon = false;
  oo.device_uuid = device;
  return Bitmap::open(std::move(storage), oo, ec);
}

}  // namespace llbitmap::test
