// SPDX-License-Identifier: LGPL-2.1-or-later
//
// crash_knobs.h: the knobs both crash tests (crash_enum_test, reactor_crash_test) read,
// and their main(). docs/testing.md lists them:
//   --exhaustive (or LLBM_CRASH_EXHAUSTIVE=1)  the long variant (the soak configuration);
//   LLBM_CRASH_SCALE=F                          F times the default number of workloads;
//   LLBM_CRASH_SEED=N                           another base seed;
//   LLBM_CRASH_ONLY=N                           replay the one workload seed N.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace llbitmap::test {

// Set by crash_test_main (--exhaustive) or by crash_knobs() (LLBM_CRASH_EXHAUSTIVE=1).
inline bool& crash_exhaustive() {
  static bool exhaustive = false;
  return exhaustive;
}

struct CrashKnobs {
  bool exhaustive = false;
  int workloads = 0;  // the default count, scaled by LLBM_CRASH_SCALE
  std::uint64_t base_seed = 0;
  std::optional<std::uint64_t> only;
};

// Reads the environment. `workloads` is the default count (before --exhaustive's
// factor, which the caller applies with the rest of its long variant), `base_seed` the
// test's own default.
inline CrashKnobs crash_knobs(int workloads, std::uint64_t base_seed) {
  CrashKnobs k;
  if (const char* e = std::getenv("LLBM_CRASH_EXHAUSTIVE");
      e != nullptr && std::strcmp(e, "1") == 0)
    crash_exhaustive() = true;
  k.exhaustive = crash_exhaustive();
  k.workloads = k.exhaustive ? workloads * 10 : workloads;
  if (const char* e = std::getenv("LLBM_CRASH_SCALE"); e != nullptr) {
    const double f = std::strtod(e, nullptr);
    if (f > 0) k.workloads = std::max(1, static_cast<int>(k.workloads * f));
  }
  k.base_seed = base_seed;
  if (const char* e = std::getenv("LLBM_CRASH_SEED"); e != nullptr)
    k.base_seed = std::strtoull(e, nullptr, 0);
  if (const char* e = std::getenv("LLBM_CRASH_ONLY"); e != nullptr)
    k.only = std::strtoull(e, nullptr, 0);
  return k;
}

// main(): strips --exhaustive before gtest parses the rest.
inline int crash_test_main(int argc, char** argv) {
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--exhaustive") == 0)
      crash_exhaustive() = true;
    else
      argv[out++] = argv[i];
  }
  argc = out;
  argv[argc] = nullptr;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

}  // namespace llbitmap::test
