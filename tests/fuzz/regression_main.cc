// SPDX-License-Identifier: LGPL-2.1-or-later
//
// regression_main.cc: the open() fuzz target as a plain program, so that every build
// (g++, no libFuzzer) runs the corpus through the same checks (fuzz_open.h) and proves
// that the seeds still open:
//
//   fuzz_open_regression PATH...            check every file (directories: every file in
//                                           them); a file named seed-* must be accepted
//   fuzz_open_regression --seeds            generate the seed corpus in memory and check it
//   fuzz_open_regression --write-corpus DIR write the seed corpus into DIR
//
// A violated property aborts (see fuzz_open.cc); a seed that does not open, or a path
// that cannot be read, exits with status 1.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_open.h"

namespace {

namespace fs = std::filesystem;
using llbitmap::fuzz::check_open_input;
using llbitmap::fuzz::CheckResult;

struct Tally {
  unsigned inputs = 0, accepted = 0, variants = 0, variants_accepted = 0, failures = 0;
};

void run_one(const std::string& name, const std::vector<std::byte>& bytes, Tally& t) {
  const CheckResult r = check_open_input(bytes);
  ++t.inputs;
  t.accepted += r.accepted ? 1 : 0;
  t.variants += r.variants;
  t.variants_accepted += r.variants_accepted;
  if (name.rfind("seed-", 0) == 0 && !r.accepted) {
    std::fprintf(stderr, "FAIL: seed %s (%zu bytes) does not open\n", name.c_str(), bytes.size());
    ++t.failures;
  }
}

bool run_file(const fs::path& p, Tally& t) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "FAIL: cannot read %s\n", p.c_str());
    ++t.failures;
    return false;
  }
  const std::vector<char> raw((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(raw.size());
  std::memcpy(bytes.data(), raw.data(), raw.size());
  run_one(p.filename().string(), bytes, t);
  return true;
}

int write_corpus(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  std::size_t total = 0;
  for (const auto& [name, bytes] : llbitmap::fuzz::make_seed_corpus()) {
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
      return 1;
    }
    total += bytes.size();
    std::printf("%-40s %7zu bytes\n", name.c_str(), bytes.size());
  }
  std::printf("%zu bytes in total\n", total);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--write-corpus") == 0) return write_corpus(argv[2]);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PATH... | --seeds | --write-corpus DIR\n", argv[0]);
    return 2;
  }
  Tally t;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seeds") == 0) {
      for (const auto& [name, bytes] : llbitmap::fuzz::make_seed_corpus()) run_one(name, bytes, t);
      continue;
    }
    const fs::path p(argv[i]);
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(p, ec))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      if (files.empty()) {
        std::fprintf(stderr, "FAIL: no input in %s\n", p.c_str());
        ++t.failures;
      }
      for (const fs::path& f : files) run_file(f, t);
    } else {
      run_file(p, t);
    }
  }
  std::printf(
      "fuzz_open_regression: %u inputs (%u opened, %u refused), %u variants checked "
      "(%u opened)\n",
      t.inputs, t.accepted, t.inputs - t.accepted, t.variants, t.variants_accepted);
  if (t.failures != 0) {
    std::printf("fuzz_open_regression: %u failures\n", t.failures);
    return 1;
  }
  std::printf("fuzz_open_regression: every property held\n");
  return 0;
}
