// SPDX-License-Identifier: LGPL-2.1-or-later
//
// leg_io.h: the POSIX IO helpers of the mirror and of the tools built on it: whole
// transfers with EINTR and short-transfer handling, fdatasync, the size of a leg (file
// or block device), durable small marker files, and a byte-for-byte comparison of two
// legs that skips the ranges where both are holes.
//
// Every function returns a std::error_code (errno values in the generic category) and
// never throws beyond std::bad_alloc. They block for the duration of the IO; any thread
// may call them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

namespace llbitmap::mirror {

// Writes exactly n bytes at offset (retries on EINTR and short writes).
std::error_code pwrite_all(int fd, const std::byte* data, std::size_t n, std::uint64_t offset);
// Reads exactly n bytes at offset. End of file first: Errc::short_io.
std::error_code pread_all(int fd, std::byte* out, std::size_t n, std::uint64_t offset);
// fdatasync, retried on EINTR.
std::error_code sync_fd(int fd);
// fsync of the directory that holds `path` (makes a create, rename or unlink durable).
std::error_code sync_parent_dir(const std::filesystem::path& path);
// The size of an open leg: st_size for a regular file, BLKGETSIZE64 for a block device.
// Anything else (a character device): `known` is false and bytes is 0.
std::error_code leg_size(int fd, std::uint64_t& bytes, bool& known);

// Replaces `path` durably with a small file holding `text` (temporary file, fsync,
// rename, directory fsync).
std::error_code write_marker(const std::filesystem::path& path, const std::string& text);
// Reads a marker; `exists` is false (and no error) when there is none.
std::error_code read_marker(const std::filesystem::path& path, std::string& text, bool& exists);
// Removes a marker durably (unlink, directory fsync). No marker: no error.
std::error_code remove_marker(const std::filesystem::path& path);

struct CompareResult {
  bool identical = true;
  std::uint64_t first_difference = 0;  // device offset of the first differing byte
  std::uint64_t bytes_compared = 0;    // bytes read from each leg (holes on both skipped)
};

// Compares [0, size) of two files (or block devices) byte for byte. Ranges that are a
// hole in both (SEEK_DATA / SEEK_HOLE) are equal without being read; where SEEK_DATA is
// not supported everything is read.
std::error_code compare_legs(const std::filesystem::path& a, const std::filesystem::path& b,
                             std::uint64_t size, CompareResult& result);

}  // namespace llbitmap::mirror
