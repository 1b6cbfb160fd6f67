// SPDX-License-Identifier: LGPL-2.1-or-later
#include <llbitmap/detail/check.h>
#include <llbitmap/error.h>
#include <llbitmap/storage.h>

#include <cerrno>
#include <cstdio>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace llbitmap {
namespace {

std::error_code errno_code(int e) noexcept {
  return {e, std::system_category()};
}

// Owns a descriptor; closes it unless released.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) noexcept : fd_(fd) {}
  ~ScopedFd() { reset(); }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    // close() is not retried on EINTR: on Linux the descriptor is released regardless.
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

constexpr std::uint64_t kMaxOffset = static_cast<std::uint64_t>(std::numeric_limits<off_t>::max());

bool range_ok(std::uint64_t offset, std::size_t len) noexcept {
  return offset <= kMaxOffset && len <= kMaxOffset - offset;
}

std::error_code pread_all(int fd, std::uint64_t offset, std::span<std::byte> out) noexcept {
  if (!range_ok(offset, out.size())) return std::make_error_code(std::errc::invalid_argument);
  while (!out.empty()) {
    const ssize_t n = ::pread(fd, out.data(), out.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_code(errno);
    }
    if (n == 0) return make_error_code(Errc::short_io);  // end of file
    out = out.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

std::error_code pwrite_all(int fd, std::uint64_t offset, std::span<const std::byte> data) noexcept {
  if (!range_ok(offset, data.size())) return std::make_error_code(std::errc::invalid_argument);
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_code(errno);
    }
    if (n == 0) return make_error_code(Errc::short_io);  // no progress: never loop forever
    data = data.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

std::error_code fsync_fd(int fd, bool data_only) noexcept {
  for (;;) {
    const int r = data_only ? ::fdatasync(fd) : ::fsync(fd);
    if (r == 0) return {};
    // EINTR means the flush did not complete and reported nothing: asking again is not
    // the retry-after-failure that fsyncgate forbids.
    if (errno != EINTR) return errno_code(errno);
  }
}

// Takes the exclusive lock of the file open at fd (storage.h: one writer per file).
// Held by another open file description: Errc::bitmap_in_use.
std::error_code lock_exclusive(int fd) noexcept {
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return {};
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return make_error_code(Errc::bitmap_in_use);
    return errno_code(errno);
  }
}

// One attempt at the create protocol with a given kind of temporary file.
class Creator {
 public:
  Creator(int dirfd, std::string name, std::span<const std::byte> contents,
          const CreateFaultHook* inject) noexcept
      : dirfd_(dirfd), name_(std::move(name)), contents_(contents), inject_(inject) {}

  ~Creator() {
    // Any path that did not hand the descriptor out removes its named temporary.
    if (!temp_name_.empty()) ::unlinkat(dirfd_, temp_name_.c_str(), 0);
  }
  Creator(const Creator&) = delete;
  Creator& operator=(const Creator&) = delete;

  // Returns the open descriptor of the linked file, or -1 with ec set. `fallback` is set
  // when an O_TMPFILE attempt failed for a reason a named temporary would not have.
  int run(bool use_tmpfile, std::error_code& ec, bool& fallback) {
    fallback = false;
    if ((ec = open_temp(use_tmpfile, fallback))) return -1;
    // Locked before it has a name: nobody can open the new file between the link and
    // the lock.
    if ((ec = lock_exclusive(fd_.get()))) return -1;
    if ((ec = allocate())) return -1;
    if ((ec = injected(CreateStep::kWrite))) return -1;
    if ((ec = pwrite_all(fd_.get(), 0, contents_))) return -1;
    if ((ec = injected(CreateStep::kSyncFile))) return -1;
    if ((ec = fsync_fd(fd_.get(), /*data_only=*/false))) return -1;
    if ((ec = link(use_tmpfile, fallback))) return -1;
    // The name is in place; from here a failure must remove it again.
    ec = injected(CreateStep::kSyncDir);
    if (!ec) ec = fsync_fd(dirfd_, /*data_only=*/false);
    if (ec) {
      ::unlinkat(dirfd_, name_.c_str(), 0);
      (void)fsync_fd(dirfd_, false);  // best effort: the error above is what we report
      return -1;
    }
    return fd_.release();
  }

 private:
  std::error_code injected(CreateStep step) const {
    if (inject_ != nullptr && *inject_) return (*inject_)(step);
    return {};
  }

  std::error_code open_temp(bool use_tmpfile, bool& fallback) {
    if (use_tmpfile) {
      std::error_code e = injected(CreateStep::kOpenTemp);
      if (!e) {
        const int fd = ::openat(dirfd_, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
        if (fd >= 0) {
          fd_.reset(fd);
          return {};
        }
        e = errno_code(errno);
      }
      // The file system or kernel has no O_TMPFILE: use a named temporary instead.
      if (e == std::errc::operation_not_supported || e == std::errc::is_a_directory ||
          e == std::errc::invalid_argument)
        fallback = true;
      return e;
    }
    if (std::error_code e = injected(CreateStep::kOpenTemp)) return e;
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
      char suffix[16];
      std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(rd()));
      std::string tmp = "." + name_ + ".tmp-" + suffix;
      const int fd =
          ::openat(dirfd_, tmp.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0666);
      if (fd >= 0) {
        fd_.reset(fd);
        temp_name_ = std::move(tmp);
        return {};
      }
      if (errno != EEXIST) return errno_code(errno);
    }
    return std::make_error_code(std::errc::file_exists);
  }

  std::error_code allocate() {
    if (std::error_code e = injected(CreateStep::kAllocate)) return e;
    if (contents_.empty()) return {};
    for (;;) {
      // posix_fallocate returns the error number instead of setting errno.
      const int r = ::posix_fallocate(fd_.get(), 0, static_cast<off_t>(contents_.size()));
      if (r == 0) return {};
      if (r == EINTR) continue;
      // No preallocation on this file system: the writes below allocate (and report
      // ENOSPC themselves).
      if (r == EOPNOTSUPP) return {};
      return errno_code(r);
    }
  }

  std::error_code link(bool use_tmpfile, bool& fallback) {
    if (std::error_code e = injected(CreateStep::kLink)) return e;
    if (use_tmpfile) {
      // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc path works without it.
      if (::linkat(fd_.get(), "", dirfd_, name_.c_str(), AT_EMPTY_PATH) == 0) return {};
      if (errno == EEXIST) return std::make_error_code(std::errc::file_exists);
      const std::string proc = "/proc/self/fd/" + std::to_string(fd_.get());
      if (::linkat(AT_FDCWD, proc.c_str(), dirfd_, name_.c_str(), AT_SYMLINK_FOLLOW) == 0)
        return {};
      const int e = errno;
      if (e == EEXIST) return std::make_error_code(std::errc::file_exists);
      fallback = true;  // no way to name an O_TMPFILE here: use a named temporary
      return errno_code(e);
    }
    if (::renameat2(dirfd_, temp_name_.c_str(), dirfd_, name_.c_str(), RENAME_NOREPLACE) == 0) {
      temp_name_.clear();
      return {};
    }
    int e = errno;
    if (e == EINVAL || e == ENOSYS || e == EOPNOTSUPP) {
      // No RENAME_NOREPLACE here: link (which never replaces), then drop the temporary.
      if (::linkat(dirfd_, temp_name_.c_str(), dirfd_, name_.c_str(), 0) == 0) {
        ::unlinkat(dirfd_, temp_name_.c_str(), 0);
        temp_name_.clear();
        return {};
      }
      e = errno;
    }
    if (e == EEXIST) return std::make_error_code(std::errc::file_exists);
    return errno_code(e);
  }

  const int dirfd_;
  const std::string name_;
  const std::span<const std::byte> contents_;
  const CreateFaultHook* const inject_;
  ScopedFd fd_;
  std::string temp_name_;  // non-empty while a named temporary exists
};

std::unique_ptr<FileStorage> null_with(std::error_code& ec, std::error_code e) {
  ec = e;
  return nullptr;
}

}  // namespace

FileStorage::FileStorage(int fd, std::filesystem::path path, bool read_only) noexcept
    : fd_(fd), path_(std::move(path)), read_only_(read_only) {}

FileStorage::~FileStorage() {
  ::close(fd_);
}

std::unique_ptr<FileStorage> FileStorage::create(const std::filesystem::path& path,
                                                 std::span<const std::byte> initial_contents,
                                                 std::error_code& ec) {
  return create(path, initial_contents, ec, CreateFaultHook{});
}

std::unique_ptr<FileStorage> FileStorage::create(const std::filesystem::path& path,
                                                 std::span<const std::byte> initial_contents,
                                                 std::error_code& ec,
                                                 const CreateFaultHook& inject) {
  ec.clear();
  const std::string name = path.filename().string();
  if (name.empty() || name == "." || name == "..")
    return null_with(ec, std::make_error_code(std::errc::invalid_argument));
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  ScopedFd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirfd.get() < 0) return null_with(ec, errno_code(errno));

  // Refuse early if something is already there; the link step is what guarantees that
  // nothing is replaced when the path appears meanwhile.
  struct stat st {};
  if (::fstatat(dirfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
    return null_with(ec, std::make_error_code(std::errc::file_exists));
  if (errno != ENOENT) return null_with(ec, errno_code(errno));

  bool fallback = false;
  int fd = -1;
  {
    Creator c(dirfd.get(), name, initial_contents, &inject);
    fd = c.run(/*use_tmpfile=*/true, ec, fallback);
  }
  if (fd < 0 && fallback) {
    Creator c(dirfd.get(), name, initial_contents, &inject);
    fd = c.run(/*use_tmpfile=*/false, ec, fallback);
  }
  if (fd < 0) return nullptr;
  return std::unique_ptr<FileStorage>(new FileStorage(fd, path, /*read_only=*/false));
}

namespace {

// Opens an existing regular file or block device; locks it unless read_only.
int open_existing(const std::filesystem::path& path, bool read_only, std::error_code& ec) {
  ScopedFd fd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (fd.get() < 0) {
    ec = errno_code(errno);
    return -1;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    ec = errno_code(errno);
    return -1;
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return -1;
  }
  if (!read_only && (ec = lock_exclusive(fd.get()))) return -1;
  return fd.release();
}

}  // namespace

std::unique_ptr<FileStorage> FileStorage::open(const std::filesystem::path& path,
                                               std::error_code& ec) {
  ec.clear();
  const int fd = open_existing(path, /*read_only=*/false, ec);
  if (fd < 0) return nullptr;
  return std::unique_ptr<FileStorage>(new FileStorage(fd, path, /*read_only=*/false));
}

std::unique_ptr<FileStorage> FileStorage::open_read_only(const std::filesystem::path& path,
                                                         std::error_code& ec) {
  ec.clear();
  const int fd = open_existing(path, /*read_only=*/true, ec);
  if (fd < 0) return nullptr;
  return std::unique_ptr<FileStorage>(new FileStorage(fd, path, /*read_only=*/true));
}

std::error_code FileStorage::read(std::uint64_t offset, std::span<std::byte> out) {
  return pread_all(fd_, offset, out);
}

std::error_code FileStorage::write(std::uint64_t offset, std::span<const std::byte> data) {
  if (read_only_) return std::make_error_code(std::errc::bad_file_descriptor);
  return pwrite_all(fd_, offset, data);
}

std::error_code FileStorage::sync() {
  if (read_only_) return std::make_error_code(std::errc::bad_file_descriptor);
  return fsync_fd(fd_, /*data_only=*/true);
}

std::error_code FileStorage::size(std::uint64_t& bytes) {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return errno_code(errno);
  if (S_ISBLK(st.st_mode)) {
    const off_t end = ::lseek(fd_, 0, SEEK_END);  // pread/pwrite ignore the position
    if (end < 0) return errno_code(errno);
    bytes = static_cast<std::uint64_t>(end);
    return {};
  }
  bytes = static_cast<std::uint64_t>(st.st_size);
  return {};
}

}  // namespace llbitmap
