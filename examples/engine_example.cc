// SPDX-License-Identifier: LGPL-2.1-or-later
//
// engine_example.cc: how a storage engine uses llbitmap (the README's example).
//
// A data file stands for the protected device. Every write is bracketed by
// start_write/end_write; the bitmap's data-flush hook makes the data durable before
// the daemon persists Clean; after a crash, only the chunks needs_sync() returns are
// resynchronised; a member that was away gets needs_recovery() (Dirty chunks included).
// The bitmap is bound to the device's uuid, and its events() are kept with the engine's
// metadata so that an older copy of the file is caught at open. Run: engine_example DIR
#include <llbitmap/bitmap.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
  const std::uint64_t device_bytes = 256ull << 20;
  const int data = ::open((dir / "data").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (data < 0 || ::ftruncate(data, static_cast<off_t>(device_bytes)) != 0) return 1;

  // 1. Create (or open) the bitmap. The hook runs before any chunk is made Clean on disk.
  // The device's identity, as the engine's own metadata holds it.
  const llbitmap::DeviceUuid device_uuid = {0x6c, 0x6c, 0x62, 0x6d, 0x2d, 0x65, 0x78, 0x61,
                                            0x6d, 0x70, 0x6c, 0x65, 0x2d, 0x64, 0x65, 0x76};
  llbitmap::BitmapOptions opt;
  opt.device_bytes = device_bytes;
  opt.device_uuid = device_uuid;  // the file is bound to this device
  opt.data_flush = [data]() -> std::error_code {
    if (::fdatasync(data) != 0) return {errno, std::generic_category()};
    return {};
  };
  std::error_code ec;
  auto bitmap = llbitmap::Bitmap::create(dir / "bitmap", opt, ec);
  if (!bitmap) {
    std::fprintf(stderr, "create: %s\n", ec.message().c_str());
    return 1;
  }

  // 2. The write path: durable Dirty first, then the data, then end_write.
  std::vector<char> buf(4096, 'x');
  const std::uint64_t offset = 10 << 20;
  {
    llbitmap::WriteGuard guard = bitmap->guard_write(offset, buf.size(), ec);
    if (ec) return 1;  // do not issue the write: its region is not known to be Dirty
    if (::pwrite(data, buf.data(), buf.size(), static_cast<off_t>(offset)) < 0) return 1;
  }  // end_write: the daemon may clean the chunk once it is idle (after data_flush)

  // 3. After a crash, reopen and copy only what needs it (here: nothing, clean close).
  // The events close leaves are saved with the engine's metadata (a real engine writes
  // them durably next to its device uuid) and handed back at open.
  if ((ec = bitmap->close())) return 1;
  const std::uint64_t saved_events = bitmap->events();
  bitmap.reset();
  llbitmap::OpenOptions oo;
  oo.data_flush = opt.data_flush;
  oo.device_uuid = device_uuid;  // another device's bitmap: Errc::foreign_bitmap
  oo.min_events = saved_events;  // an older copy of the file: every chunk NeedSync
  bitmap = llbitmap::Bitmap::open(dir / "bitmap", oo, ec);
  if (!bitmap) return 1;
  if (bitmap->out_of_date()) return 1;  // not here: this is the file close left
  for (auto [off, len] : bitmap->needs_sync()) {
    for (std::uint64_t o = off; o < off + len; o += bitmap->chunk_bytes()) {
      if (bitmap->start_sync(o)) {
        // ... copy the chunk from the good replica ...
        bitmap->end_sync(o);
      }
    }
  }

  // 4. A member goes away (here: pretend the device has a second copy that failed) and
  // later comes back. Degraded, nothing is cleaned; the returning member needs every
  // chunk written meanwhile and every chunk that was Dirty when it left.
  bitmap->set_degraded(true);
  {
    llbitmap::WriteGuard guard = bitmap->guard_write(offset, buf.size(), ec);
    if (ec) return 1;
    if (::pwrite(data, buf.data(), buf.size(), static_cast<off_t>(offset)) < 0) return 1;
  }
  std::uint64_t recovered = 0;
  for (auto [off, len] : bitmap->needs_recovery()) {  // a new blank member: needs_rebuild()
    for (std::uint64_t o = off; o < off + len; o += bitmap->chunk_bytes()) {
      if (bitmap->start_sync(o, llbitmap::SyncKind::kRecovery)) {
        // ... copy the chunk to the returning member ...
        bitmap->end_sync(o);
        ++recovered;
      }
    }
  }
  bitmap->set_degraded(false);
  if (recovered != 1) return 1;  // the one chunk written while the member was away

  const llbitmap::StateCounts n = bitmap->counts();
  std::printf("chunks %llu: dirty %llu, need sync %llu\n",
              static_cast<unsigned long long>(bitmap->chunks()),
              static_cast<unsigned long long>(n.dirty),
              static_cast<unsigned long long>(n.need_sync));
  ec = bitmap->close();  // runs data_flush one last time: before the data file closes
  ::close(data);
  return ec ? 1 : 0;
}
