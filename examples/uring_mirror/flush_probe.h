// SPDX-License-Identifier: LGPL-2.1-or-later
//
// flush_probe.h: what the medium itself takes for what a first touch of the bitmap adds
// (one 4 KiB write of the bitmap file and one fdatasync), measured two ways on a probe
// file opened as the engine opens the bitmap (buffered):
//   syscall  pwrite + fdatasync on the calling thread (what a blocking engine pays);
//   ring     the same pair through an io_uring, the fsync linked behind the write
//            (IOSQE_IO_LINK), submitted and waited for together (what a reactor's
//            persist round of one write pays at best).
// The two are measured alternately, `samples` times each; the file is removed after.
#pragma once

#include <string>
#include <system_error>

namespace llbitmap::uring_mirror {

struct FlushProbe {
  double syscall_p50_us = 0, syscall_p99_us = 0;
  double ring_p50_us = 0, ring_p99_us = 0;
  unsigned samples = 0;
};

std::error_code probe_flush(const std::string& path, unsigned samples, FlushProbe& out);

}  // namespace llbitmap::uring_mirror
