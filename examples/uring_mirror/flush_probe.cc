// SPDX-License-Identifier: LGPL-2.1-or-later
//
// flush_probe.cc: see flush_probe.h.
#include "flush_probe.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "histogram.h"
#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

namespace llbitmap::uring_mirror {

namespace {

std::error_code errno_code() {
  return {errno, std::generic_category()};
}

double quantile_us(std::vector<std::uint64_t> ns, double q) {
  if (ns.empty()) return 0;
  std::sort(ns.begin(), ns.end());
  const auto i = static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1));
  return static_cast<double>(ns[i]) / 1000.0;
}

// One write + fdatasync through the syscalls.
std::error_code by_syscall(int fd, const std::byte* buf) {
  const ssize_t n = ::pwrite(fd, buf, 4096, 0);
  if (n < 0) return errno_code();
  if (n != 4096) return std::make_error_code(std::errc::io_error);
  if (::fdatasync(fd) != 0) return errno_code();
  return {};
}

// The same through the ring: the fsync linked behind the write, both waited for.
std::error_code by_ring(io_uring& ring, int fd, const std::byte* buf) {
  // The ring is empty between samples: both entries are free.
  io_uring_sqe* w = io_uring_get_sqe(&ring);
  io_uring_sqe* f = w != nullptr ? io_uring_get_sqe(&ring) : nullptr;
  if (w == nullptr || f == nullptr) return std::make_error_code(std::errc::device_or_resource_busy);
  io_uring_prep_write(w, fd, buf, 4096, 0);
  w->flags |= IOSQE_IO_LINK;
  io_uring_prep_fsync(f, fd, IORING_FSYNC_DATASYNC);
  int r = io_uring_submit_and_wait(&ring, 2);
  if (r < 0) return {-r, std::generic_category()};
  std::error_code ec;
  for (int i = 0; i < 2; ++i) {
    io_uring_cqe* cqe = nullptr;
    r = io_uring_wait_cqe(&ring, &cqe);
    if (r < 0) return {-r, std::generic_category()};
    if (cqe->res < 0 && !ec) ec = {-cqe->res, std::generic_category()};
    io_uring_cqe_seen(&ring, cqe);
  }
  return ec;
}

}  // namespace

std::error_code probe_flush(const std::string& path, unsigned samples, FlushProbe& out) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_code();
  io_uring ring{};
  if (const int r = io_uring_queue_init(8, &ring, 0); r < 0) {
    ::close(fd);
    ::unlink(path.c_str());
    return {-r, std::generic_category()};
  }
  alignas(4096) static std::byte buf[4096];
  std::vector<std::uint64_t> sys, ring_ns;
  std::error_code ec = by_syscall(fd, buf);  // the file's block exists before the first sample
  for (unsigned i = 0; i < samples && !ec; ++i) {
    std::uint64_t t = now_ns();
    ec = by_syscall(fd, buf);
    sys.push_back(now_ns() - t);
    if (ec) break;
    t = now_ns();
    ec = by_ring(ring, fd, buf);
    ring_ns.push_back(now_ns() - t);
  }
  io_uring_queue_exit(&ring);
  ::close(fd);
  ::unlink(path.c_str());
  if (ec) return ec;
  out.samples = samples;
  out.syscall_p50_us = quantile_us(sys, 0.5);
  out.syscall_p99_us = quantile_us(sys, 0.99);
  out.ring_p50_us = quantile_us(ring_ns, 0.5);
  out.ring_p99_us = quantile_us(ring_ns, 0.99);
  return {};
}

}  // namespace llbitmap::uring_mirror
