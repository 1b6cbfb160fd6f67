// SPDX-License-Identifier: LGPL-2.1-or-later
//
// leg_io.cc: the POSIX IO helpers of leg_io.h.
#include "leg_io.h"

#include <llbitmap/error.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace llbitmap::mirror {

namespace {

std::error_code errno_code(int e) {
  return {e, std::generic_category()};
}

// Closes a descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const noexcept { return fd_; }

 private:
  int fd_;
};

using Extent = std::pair<std::uint64_t, std::uint64_t>;  // [begin, end)

// The data extents of [0, size) of fd. Where SEEK_DATA is not supported: one extent
// covering everything.
std::error_code data_extents(int fd, std::uint64_t size, std::vector<Extent>& out) {
  std::uint64_t pos = 0;
  while (pos < size) {
    const off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return {};  // no data after pos
      if (errno == EINVAL || errno == EOPNOTSUPP) {
        out.assign(1, Extent{0, size});
        return {};
      }
      return errno_code(errno);
    }
    if (static_cast<std::uint64_t>(data) >= size) return {};
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return errno_code(errno);
    const std::uint64_t end = std::min<std::uint64_t>(static_cast<std::uint64_t>(hole), size);
    out.emplace_back(static_cast<std::uint64_t>(data), end);
    pos = end;
  }
  return {};
}

}  // namespace

std::error_code pwrite_all(int fd, const std::byte* data, std::size_t n, std::uint64_t offset) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno_code(errno);
    }
    if (w == 0) return errno_code(EIO);
    data += w;
    n -= static_cast<std::size_t>(w);
    offset += static_cast<std::uint64_t>(w);
  }
  return {};
}

std::error_code pread_all(int fd, std::byte* out, std::size_t n, std::uint64_t offset) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, out, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno_code(errno);
    }
    if (r == 0) return Errc::short_io;
    out += r;
    n -= static_cast<std::size_t>(r);
    offset += static_cast<std::uint64_t>(r);
  }
  return {};
}

std::error_code sync_fd(int fd) {
  while (::fdatasync(fd) != 0) {
    if (errno != EINTR) return errno_code(errno);
  }
  return {};
}

std::error_code sync_parent_dir(const std::filesystem::path& path) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return errno_code(errno);
  while (::fsync(fd.get()) != 0) {
    if (errno != EINTR) return errno_code(errno);
  }
  return {};
}

std::error_code leg_size(int fd, std::uint64_t& bytes, bool& known) {
  struct stat st {};
  bytes = 0;
  known = false;
  if (::fstat(fd, &st) != 0) return errno_code(errno);
  if (S_ISREG(st.st_mode)) {
    bytes = static_cast<std::uint64_t>(st.st_size);
    known = true;
  } else if (S_ISBLK(st.st_mode)) {
    std::uint64_t b = 0;
    if (::ioctl(fd, BLKGETSIZE64, &b) != 0) return errno_code(errno);
    bytes = b;
    known = true;
  }
  return {};
}

std::error_code write_marker(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) return errno_code(errno);
    if (std::error_code ec =
            pwrite_all(fd.get(), reinterpret_cast<const std::byte*>(text.data()), text.size(), 0)) {
      ::unlink(tmp.c_str());
      return ec;
    }
    while (::fsync(fd.get()) != 0) {
      if (errno != EINTR) {
        const int e = errno;
        ::unlink(tmp.c_str());
        return errno_code(e);
      }
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return errno_code(e);
  }
  return sync_parent_dir(path);
}

std::error_code read_marker(const std::filesystem::path& path, std::string& text, bool& exists) {
  text.clear();
  exists = false;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return errno == ENOENT ? std::error_code{} : errno_code(errno);
  exists = true;
  char buf[256];
  for (;;) {
    const ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno_code(errno);
    }
    if (r == 0) break;
    text.append(buf, static_cast<std::size_t>(r));
    if (text.size() > 4096) break;  // a marker is a few bytes; never read a stray big file
  }
  return {};
}

std::error_code remove_marker(const std::filesystem::path& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return {};
    return errno_code(errno);
  }
  return sync_parent_dir(path);
}

std::error_code compare_legs(const std::filesystem::path& a, const std::filesystem::path& b,
                             std::uint64_t size, CompareResult& result) {
  result = CompareResult{};
  Fd fa(::open(a.c_str(), O_RDONLY | O_CLOEXEC));
  if (fa.get() < 0) return errno_code(errno);
  Fd fb(::open(b.c_str(), O_RDONLY | O_CLOEXEC));
  if (fb.get() < 0) return errno_code(errno);

  std::vector<Extent> ext;
  if (std::error_code ec = data_extents(fa.get(), size, ext)) return ec;
  if (std::error_code ec = data_extents(fb.get(), size, ext)) return ec;
  std::sort(ext.begin(), ext.end());
  std::vector<Extent> merged;
  for (const Extent& e : ext) {
    if (!merged.empty() && e.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, e.second);
    else
      merged.push_back(e);
  }

  constexpr std::size_t kBlock = 1 << 20;
  std::unique_ptr<std::byte[]> ba(new std::byte[kBlock]);
  std::unique_ptr<std::byte[]> bb(new std::byte[kBlock]);
  for (const Extent& e : merged) {
    for (std::uint64_t off = e.first; off < e.second;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kBlock, e.second - off));
      // A leg shorter than `size` reads as short_io: that is a difference, not an error.
      std::error_code ea = pread_all(fa.get(), ba.get(), n, off);
      std::error_code eb = pread_all(fb.get(), bb.get(), n, off);
      if (ea && ea != Errc::short_io) return ea;
      if (eb && eb != Errc::short_io) return eb;
      if (ea || eb) {
        result.identical = false;
        result.first_difference = off;
        return {};
      }
      result.bytes_compared += n;
      if (std::memcmp(ba.get(), bb.get(), n) != 0) {
        std::size_t i = 0;
        while (ba[i] == bb[i]) ++i;
        result.identical = false;
        result.first_difference = off + i;
        return {};
      }
      off += n;
    }
  }
  return {};
}

}  // namespace llbitmap::mirror
