// SPDX-License-Identifier: LGPL-2.1-or-later
//
// A consumer of the testing component (llbitmap::testing, <llbitmap/testing/fault_storage.h>)
// as an engine uses it for its own crash tests: a bitmap over a FaultStorage, a write
// started (so its chunk is durably Dirty), then the durable image reopened as after a
// crash: the chunk must need a resync. Prints "OK" and exits 0 on success.
#include <llbitmap/bitmap.h>
#include <llbitmap/testing/fault_storage.h>

#include <cstdio>
#include <memory>
#include <system_error>
#include <utility>

namespace {

int fail(const char* what, const std::error_code& ec = {}) {
  std::fprintf(stderr, "testing consumer: %s %s\n", what, ec.message().c_str());
  return 1;
}

}  // namespace

int main() {
  auto storage = std::make_unique<llbitmap::FaultStorage>();
  llbitmap::FaultStorage* disk = storage.get();
  llbitmap::BitmapOptions options;
  options.device_bytes = 64ull << 20;
  options.start_daemon = false;
  std::error_code ec;
  auto bitmap = llbitmap::Bitmap::create(std::move(storage), options, ec);
  if (!bitmap) return fail("create:", ec);
  if ((ec = bitmap->start_write(0, 4096))) return fail("start_write:", ec);
  // A crash now: only what was synced survives.
  auto crashed = std::make_unique<llbitmap::FaultStorage>(disk->durable_image());
  bitmap->end_write(0, 4096);
  bitmap.reset();
  llbitmap::OpenOptions open_options;
  open_options.start_daemon = false;
  auto reopened = llbitmap::Bitmap::open(std::move(crashed), open_options, ec);
  if (!reopened) return fail("reopen:", ec);
  if (reopened->needs_sync().empty()) return fail("the written chunk does not need a resync");
  std::puts("OK");
  return 0;
}
