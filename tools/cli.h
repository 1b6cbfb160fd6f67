// SPDX-License-Identifier: LGPL-2.1-or-later
//
// cli.h: what the subcommands of the llbitmap tool share: exit codes, the argument
// cursor ("--opt VALUE" and "--opt=VALUE"), number and size parsing ("1G", "64K",
// "4096"), size formatting ("1 GiB", "1.5 MiB"), and the entry points of the
// subcommands (one file each: cmd_create.cc, cmd_examine.cc, cmd_barrier_demo.cc).
//
// Everything here runs on the main thread; nothing blocks.
#pragma once

#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace llbitmap::tool {

// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;  // the operation failed (file, geometry, IO)
inline constexpr int kExitUsage = 2;  // the command line is wrong

// Subcommands. `args` excludes the program and subcommand names.
int cmd_create(std::span<char* const> args);
int cmd_examine(std::span<char* const> args);

// The program's name in messages: "llbitmap", or "llbitmap-demo" (examples/demo).
inline const char* g_program = "llbitmap";

// Prints "<program>: <message>" and "Try '<program> help'." to stderr; returns kExitUsage.
inline int usage_error(const std::string& message) {
  std::fprintf(stderr, "%s: %s\nTry '%s help'.\n", g_program, message.c_str(), g_program);
  return kExitUsage;
}

// Walks a subcommand's arguments. Options are "--name VALUE" or "--name=VALUE"; a bare
// "--" ends the options; everything else is positional.
class ArgCursor {
 public:
  explicit ArgCursor(std::span<char* const> args) : args_(args) {}

  [[nodiscard]] bool done() const noexcept { return pos_ >= args_.size(); }
  // The current argument, unconsumed.
  [[nodiscard]] std::string_view peek() const noexcept { return args_[pos_]; }
  // True (and consumed) if the current argument is exactly `name` ("--json").
  bool flag(std::string_view name) {
    if (done() || options_ended_ || peek() != name) return false;
    ++pos_;
    return true;
  }
  // True (and consumed) if the current argument is `name` or `name=...`; the value is
  // the next argument or the text after '='. A missing value sets `missing`.
  bool option(std::string_view name, std::string& value, bool& missing) {
    if (done() || options_ended_) return false;
    const std::string_view a = peek();
    if (a == name) {
      ++pos_;
      if (done()) {
        missing = true;
        return true;
      }
      value = args_[pos_++];
      return true;
    }
    if (a.size() > name.size() && a.substr(0, name.size()) == name && a[name.size()] == '=') {
      value = std::string(a.substr(name.size() + 1));
      ++pos_;
      return true;
    }
    return false;
  }
  // True (and consumed) if the current argument is a positional one.
  bool positional(std::string& value) {
    if (done()) return false;
    const std::string_view a = peek();
    if (!options_ended_ && a == "--") {
      options_ended_ = true;
      ++pos_;
      return positional(value);
    }
    if (!options_ended_ && a.size() > 1 && a[0] == '-') return false;
    value = std::string(a);
    ++pos_;
    return true;
  }

 private:
  std::span<char* const> args_;
  std::size_t pos_ = 0;
  bool options_ended_ = false;
};

// A decimal unsigned integer, no sign, no suffix, no overflow.
[[nodiscard]] inline std::optional<std::uint64_t> parse_uint(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// A size in bytes: digits, optionally followed by a binary unit K, M, G, T, P or E
// (case-insensitive; "K", "KB", "KiB" all mean 1024), or "B". "1G" = 2^30, "64K" =
// 65536, "4096" = 4096. Overflow or anything else: nullopt.
[[nodiscard]] inline std::optional<std::uint64_t> parse_size(std::string_view s) {
  std::size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  const auto number = parse_uint(s.substr(0, digits));
  if (!number) return std::nullopt;
  std::string unit;
  for (const char c : s.substr(digits))
    unit.push_back(static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c));
  if (unit.empty() || unit == "B") return number;
  unsigned shift = 0;
  switch (unit[0]) {
    case 'K':
      shift = 10;
      break;
    case 'M':
      shift = 20;
      break;
    case 'G':
      shift = 30;
      break;
    case 'T':
      shift = 40;
      break;
    case 'P':
      shift = 50;
      break;
    case 'E':
      shift = 60;
      break;
    default:
      return std::nullopt;
  }
  const std::string_view rest = std::string_view(unit).substr(1);
  if (!rest.empty() && rest != "B" && rest != "IB") return std::nullopt;
  if (*number > (std::numeric_limits<std::uint64_t>::max() >> shift)) return std::nullopt;
  return *number << shift;
}

// "1 GiB", "64 KiB", "1.5 MiB", "512 B": the largest binary unit that keeps the value at
// least 1, with up to two decimals (trailing zeros dropped).
[[nodiscard]] inline std::string format_size(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  unsigned u = 0;
  while (u + 1 < std::size(kUnits) && bytes >= (std::uint64_t{1} << (10 * (u + 1)))) ++u;
  if (u == 0) return std::to_string(bytes) + " B";
  const std::uint64_t unit = std::uint64_t{1} << (10 * u);
  const std::uint64_t whole = bytes / unit;
  // Hundredths, rounded down so that "1023.999 KiB" never prints as "1024 KiB".
  const auto hundredths = static_cast<unsigned>(static_cast<long double>(bytes % unit) * 100 /
                                                static_cast<long double>(unit));
  std::string s = std::to_string(whole);
  if (hundredths != 0) {
    std::string f{static_cast<char>('0' + hundredths / 10 % 10),
                  static_cast<char>('0' + hundredths % 10)};
    while (!f.empty() && f.back() == '0') f.pop_back();
    s += "." + f;
  }
  return s + " " + kUnits[u];
}

// A program's main(): runs `run`, reports anything it throws as "<program>: ..." with
// kExitError (no exception leaves main), and fails when the output cannot be written.
inline int guarded_main(int (*run)(int, char**), int argc, char** argv) {
  try {
    const int rc = run(argc, argv);
    if (std::fflush(stdout) != 0) {
      std::fprintf(stderr, "%s: error writing the output\n", g_program);
      return kExitError;
    }
    return rc;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of memory\n", g_program);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", g_program, e.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unexpected error\n", g_program);
  }
  return kExitError;
}

}  // namespace llbitmap::tool
