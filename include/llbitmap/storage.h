// SPDX-License-Identifier: LGPL-2.1-or-later
//
// storage.h: Storage, the seam between the bitmap and the medium that holds its file
// (positional read, positional write, fdatasync, size), and FileStorage, the POSIX
// implementation over one file.
//
// Layer 3. Every call returns a std::error_code and never throws (beyond
// std::bad_alloc). A transfer is all or nothing from the caller's point of view: a read
// or write that cannot move every byte returns an error (Errc::short_io for a read past
// the end of the file, the OS error otherwise), never a partial count. After a failed
// write the affected range has unspecified contents; after a failed read `out` has
// unspecified contents.
//
// Durability: write() makes data visible to later reads; only a successful sync()
// makes every write that completed before it durable (fdatasync semantics). After a
// failed sync() nothing may be assumed about the writes it covered, and a later
// successful sync() does not make them durable either (Linux marks the failed pages
// clean: the "fsyncgate" behaviour). Callers must not retry-and-trust; FileStorage does
// not hide or latch the failure, so a caller can still try to persist a "stale" marker.
//
// Threads: every member of a Storage may be called from any number of threads at once.
// Concurrent writes to overlapping ranges land in an unspecified order: callers that
// need ordering (docs/design.md#s3) serialise writes to the same block themselves. read,
// write and sync block for the duration of the IO.
//
// FileStorage::create is atomic: the contents are written, preallocated and synced in
// a temporary file in the same directory, which is then linked to the path without
// replacing anything (std::errc::file_exists if the path exists), and the directory is
// synced. A failure at any step removes the temporary and leaves nothing at the path;
// a crash during create leaves either no file at the path or the complete one (at most
// an unnamed O_TMPFILE inode the file system reclaims, or, on file systems without
// O_TMPFILE, a ".<name>.tmp-XXXXXXXX" file that is never opened as the bitmap).
// Every descriptor is opened with O_CLOEXEC.
//
// One writer per file: create() and open() take an exclusive lock on the file with
// flock(LOCK_EX | LOCK_NB) and hold it until the FileStorage is destroyed. A flock lock
// belongs to the open file description, not to the process (unlike a POSIX fcntl lock,
// which a second open in the same process would silently share and a close of any
// descriptor of the file would drop), so a second open() of the same file (through any
// path, symlink or hard link: the lock is on the inode) is refused with
// Errc::bitmap_in_use, from the same process as from another one, and the file is not
// touched. create() locks its temporary before linking it, so the file is never
// visible unlocked. A Bitmap keeps its FileStorage, and so the lock, until it is
// destroyed (close() is not enough): destroy it before opening the file again. The
// lock is advisory: it keeps out other FileStorage (and flock)
// users, not a plain write(). A child made by fork() shares the descriptor and
// therefore the lock until it exits or execs (the descriptor is O_CLOEXEC). Two device
// nodes of the same block device are different inodes and do not share a lock. Locks
// work this way on local file systems; on NFS, Linux emulates flock with whole-file
// byte-range locks and the server decides.
//
// open_read_only() takes no lock at all: it must work while the bitmap is open for
// writing (`llbitmap examine` of a live bitmap), and even a shared lock, held for a
// moment, would make a concurrent open() fail. What it reads of a file that is being
// written is a snapshot that may be mid-update (a block whose checksum does not match
// yet); it never writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <system_error>

namespace llbitmap {

class Storage {
 public:
  virtual ~Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // Reads exactly out.size() bytes at offset. Past the end: Errc::short_io.
  [[nodiscard]] virtual std::error_code read(std::uint64_t offset, std::span<std::byte> out) = 0;
  // Writes exactly data.size() bytes at offset (a write past the end extends the file).
  [[nodiscard]] virtual std::error_code write(std::uint64_t offset,
                                              std::span<const std::byte> data) = 0;
  // Makes every write completed before the call durable (fdatasync).
  [[nodiscard]] virtual std::error_code sync() = 0;
  // The current size in bytes.
  [[nodiscard]] virtual std::error_code size(std::uint64_t& bytes) = 0;

 protected:
  Storage() = default;
};

// The steps of FileStorage::create, in order, for the failure-injection overload.
enum class CreateStep {
  kOpenTemp,  // open the temporary file (O_TMPFILE, or a unique name)
  kAllocate,  // posix_fallocate the full size (ENOSPC is reported here)
  kWrite,     // write the contents
  kSyncFile,  // fsync the temporary
  kLink,      // link it to the path without replacing (EEXIST -> file_exists)
  kSyncDir,   // fsync the directory
};

// Called before each step; a non-zero return fails that step with that code, as if the
// system call had returned it (test seam). As with a real file system without O_TMPFILE,
// operation_not_supported at the first kOpenTemp makes create start over with a named
// temporary (the hook then sees kOpenTemp again).
using CreateFaultHook = std::function<std::error_code(CreateStep)>;

class FileStorage final : public Storage {
 public:
  // Creates the file at `path` with `initial_contents`, atomically (see above). Errors:
  // std::errc::file_exists if the path exists, the OS error of the failing step
  // otherwise (no_such_file_or_directory for a missing directory, no_space_on_device,
  // file_too_large, io_error, ...). On error returns nullptr and nothing is at the path.
  [[nodiscard]] static std::unique_ptr<FileStorage> create(
      const std::filesystem::path& path, std::span<const std::byte> initial_contents,
      std::error_code& ec);
  // The same, with `inject` consulted before each step.
  [[nodiscard]] static std::unique_ptr<FileStorage> create(
      const std::filesystem::path& path, std::span<const std::byte> initial_contents,
      std::error_code& ec, const CreateFaultHook& inject);

  // Opens an existing regular file (or block device) for reading and writing, and
  // takes its exclusive lock (see above). Missing: std::errc::no_such_file_or_directory;
  // a directory or other special file: std::errc::is_a_directory /
  // std::errc::invalid_argument; already open through another FileStorage (here or in
  // another process): Errc::bitmap_in_use. The file is not modified.
  [[nodiscard]] static std::unique_ptr<FileStorage> open(const std::filesystem::path& path,
                                                         std::error_code& ec);

  // Opens an existing regular file (or block device) for reading only, without a lock
  // (see above): works on a file open elsewhere and on a file the caller may read but
  // not write. write() and sync() return std::errc::bad_file_descriptor and never
  // reach the file. Errors as open(), never Errc::bitmap_in_use.
  [[nodiscard]] static std::unique_ptr<FileStorage> open_read_only(
      const std::filesystem::path& path, std::error_code& ec);

  // Closes the descriptor, which releases the lock. Does not sync: call sync() first
  // if it matters.
  ~FileStorage() override;

  [[nodiscard]] std::error_code read(std::uint64_t offset, std::span<std::byte> out) override;
  [[nodiscard]] std::error_code write(std::uint64_t offset,
                                      std::span<const std::byte> data) override;
  [[nodiscard]] std::error_code sync() override;
  [[nodiscard]] std::error_code size(std::uint64_t& bytes) override;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  // True for a FileStorage from open_read_only().
  [[nodiscard]] bool read_only() const noexcept { return read_only_; }

 private:
  FileStorage(int fd, std::filesystem::path path, bool read_only) noexcept;

  const int fd_;
  const std::filesystem::path path_;
  const bool read_only_;
};

}  // namespace llbitmap
