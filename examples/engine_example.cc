// SPDX-License-Identifier: LGPL-2.1-or-later
//
// engine_example.cc: how a storage engine uses llbitmap (the README's example).
//
// A data file stands for the protected device. Every write is bracketed by
// start_write/end_write; the bitmap's data-flush hook makes the data durable before
// the daemon persists Clean; after a crash, only the chunks needs_sync() returns are
// resynchronised. Run: engine_example DIR
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
  llbitmap::BitmapOptions opt;
  opt.device_bytes = device_bytes;
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
  if ((ec = bitmap->close())) return 1;
  bitmap.reset();
  llbitmap::OpenOptions oo;
  oo.data_flush = opt.data_flush;
  bitmap = llbitmap::Bitmap::open(dir / "bitmap", oo, ec);
  if (!bitmap) return 1;
  for (auto [off, len] : bitmap->needs_sync()) {
    for (std::uint64_t o = off; o < off + len; o += bitmap->chunk_bytes()) {
      if (bitmap->start_sync(o)) {
        // ... copy the chunk from the good replica ...
        bitmap->end_sync(o);
      }
    }
  }
  const llbitmap::StateCounts n = bitmap->counts();
  std::printf("chunks %llu: dirty %llu, need sync %llu\n",
              static_cast<unsigned long long>(bitmap->chunks()),
              static_cast<unsigned long long>(n.dirty),
              static_cast<unsigned long long>(n.need_sync));
  ec = bitmap->close();  // runs data_flush one last time: before the data file closes
  ::close(data);
  return ec ? 1 : 0;
}
