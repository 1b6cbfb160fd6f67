// SPDX-License-Identifier: LGPL-2.1-or-later
//
// error.h: Errc, the library's own error codes, and their std::error_category
// ("llbitmap").
//
// Layer 3. Every fallible call in the library returns or fills a std::error_code; nothing
// throws across the API. Two families of codes reach the caller:
//
//   llbitmap::Errc   conditions the library itself detects: a file that is not a bitmap,
//                    a superblock or geometry that does not validate, a file whose size
//                    does not match its superblock, IO still in flight at close, a bitmap
//                    left failed by an earlier sync error, a file already open, a call
//                    on a bitmap already closed, a bitmap bound to another device. Each
//                    has its own value, so a caller can tell "foreign file" from "corrupt
//                    file" from "wrong size" from "in use" from "another device's bitmap".
//   std::errc /      environmental failures reported by the operating system (EIO, ENOSPC,
//   system_category  ENOENT, EEXIST, ...) and invalid arguments: passed through unchanged.
//
// The enumerators are spelled like std::errc's (Errc::busy reads like
// std::errc::device_or_resource_busy). An llbitmap code never compares equal to a
// std::errc condition: `ec == Errc::bad_geometry` is the way to test for one.
//
// Threads: everything here is immutable after static initialisation; any thread may use
// it. Nothing blocks.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>

namespace llbitmap {

enum class Errc : int {
  // 0 is success and is never used as an Errc value.
  not_a_bitmap = 1,     // bad magic: the file is not an llbitmap file
  unsupported_version,  // version or format revision this library does not read
  bad_superblock,       // superblock checksum mismatch, or a field that cannot be valid
  bad_geometry,         // chunk size, space, block size or sizes that do not fit
  size_mismatch,        // the file size does not match the size the superblock implies
  busy,                 // IO still in flight (close with writes not ended)
  bitmap_failed,        // an earlier sync failed: the bitmap is in the failed state
  short_io,             // a read or write could not transfer every byte (read past end)
  bitmap_in_use,        // the file is already open for writing (its exclusive lock is held)
  bitmap_closed,        // the bitmap was closed: it takes no more writes, discards or flushes
  foreign_bitmap,       // the file is bound to another device (OpenOptions::device_uuid)
};

// The category whose name() is "llbitmap".
[[nodiscard]] const std::error_category& llbitmap_category() noexcept;

[[nodiscard]] std::error_code make_error_code(Errc e) noexcept;

}  // namespace llbitmap

template <>
struct std::is_error_code_enum<llbitmap::Errc> : std::true_type {};
