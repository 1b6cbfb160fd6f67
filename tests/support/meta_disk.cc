// SPDX-License-Identifier: LGPL-2.1-or-later
//
// meta_disk.cc: MetaDisk over a FaultStorage.
#include "meta_disk.h"

#include <llbitmap/testing/fault_storage.h>

#include <utility>

#include "crash_images.h"

namespace llbitmap::test {

struct MetaDisk::Impl {
  explicit Impl(std::vector<std::byte> initial) : storage(std::move(initial)) {}
  FaultStorage storage;
};

MetaDisk::MetaDisk(std::vector<std::byte> initial)
    : impl_(std::make_unique<Impl>(std::move(initial))) {}
MetaDisk::~MetaDisk() = default;

std::error_code MetaDisk::write(std::uint64_t offset, std::span<const std::byte> data) {
  return impl_->storage.write(offset, data);
}

std::error_code MetaDisk::sync() {
  return impl_->storage.sync();
}

void MetaDisk::fail_write(std::uint64_t k) {
  impl_->storage.fail_write(k);
}
void MetaDisk::fail_sync(std::uint64_t k) {
  impl_->storage.fail_sync(k);
}

std::vector<std::byte> MetaDisk::durable_image() const {
  return impl_->storage.durable_image();
}
std::vector<std::byte> MetaDisk::volatile_image() const {
  return impl_->storage.volatile_image();
}
std::size_t MetaDisk::unsynced_writes() const {
  return impl_->storage.unsynced_writes().size();
}
std::uint64_t MetaDisk::writes() const {
  return impl_->storage.counters().writes;
}
std::uint64_t MetaDisk::syncs() const {
  return impl_->storage.counters().syncs;
}

std::vector<CrashImage> MetaDisk::crash_images(const CrashImageLimits& limits,
                                               std::mt19937_64& rng) const {
  const std::vector<std::byte> durable = impl_->storage.durable_image();
  const auto pending = impl_->storage.unsynced_writes();  // FaultStorage's unsynced writes
  if (limits.quick) {
    std::vector<CrashImage> out{CrashImage{"durable", durable}};
    if (!pending.empty()) {
      CrashSelection all{CrashKind::kSubset, {}, std::nullopt};
      for (std::size_t i = 0; i < pending.size(); ++i) all.order.push_back(i);
      out.push_back(CrashImage{all.describe(), build_crash_image(durable, pending, all)});
    }
    return out;
  }
  CrashImageOptions opt;
  opt.exhaustive_writes = limits.exhaustive_writes;
  opt.samples = limits.samples;
  std::vector<CrashImage> out;
  for (const CrashSelection& sel : crash_selections(pending, opt, rng)) {
    if (!limits.torn && sel.torn) continue;
    out.push_back(CrashImage{sel.describe(), build_crash_image(durable, pending, sel)});
  }
  return out;
}

}  // namespace llbitmap::test
