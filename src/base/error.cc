// SPDX-License-Identifier: LGPL-2.1-or-later
#include <llbitmap/error.h>

namespace llbitmap {
namespace {

class LlbitmapCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "llbitmap"; }

  [[nodiscard]] std::string message(int value) const override {
    switch (static_cast<Errc>(value)) {
      case Errc::not_a_bitmap:
        return "not an llbitmap file (bad magic number)";
      case Errc::unsupported_version:
        return "unsupported bitmap version or format revision";
      case Errc::bad_superblock:
        return "corrupt bitmap superblock (checksum mismatch or invalid field)";
      case Errc::bad_geometry:
        return "invalid bitmap geometry (chunk size, space, block size or sizes do not fit)";
      case Errc::size_mismatch:
        return "bitmap file size does not match its superblock";
      case Errc::busy:
        return "bitmap busy: writes are still in flight";
      case Errc::bitmap_failed:
        return "bitmap failed: an earlier sync failed, a full resync is required";
      case Errc::short_io:
        return "short read or write: not every byte could be transferred";
      case Errc::bitmap_in_use:
        return "bitmap file in use: it is already open for writing (here or in another process)";
      case Errc::bitmap_closed:
        return "bitmap closed: close() has run, no more writes, discards or flushes are taken";
      case Errc::foreign_bitmap:
        return "bitmap belongs to another device: its device uuid differs from the one given";
    }
    return "unknown llbitmap error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& llbitmap_category() noexcept {
  // Function-local static: constant-initialised in practice (trivial constructor),
  // never destroyed before any user, safe from any thread.
  static const LlbitmapCategory category;
  return category;
}

std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), llbitmap_category()};
}

}  // namespace llbitmap
