// SPDX-License-Identifier: LGPL-2.1-or-later
//
// json_writer.h: a minimal streaming JSON writer for the tool's --json output: objects,
// arrays, strings (escaped; bytes that are not valid UTF-8 become U+FFFD, so any file
// name gives valid JSON), unsigned integers, fixed-point numbers, booleans. Output is
// indented by two spaces. Misuse (a value where a key is expected) is a programming
// error of the tool and is not checked beyond what keeps the output well-formed.
//
// Single-threaded; nothing blocks.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace llbitmap::tool {

class JsonWriter {
 public:
  explicit JsonWriter(std::FILE* out) : out_(out) {}

  void begin_object() { open('{'); }
  void end_object() { close('}'); }
  void begin_array() { open('['); }
  void end_array() { close(']'); }

  // The key of the next member of the current object.
  void key(std::string_view k) {
    separate();
    write_string(k);
    std::fputs(": ", out_);
    after_key_ = true;
  }

  void value(std::string_view s) {
    separate();
    write_string(s);
  }
  void value(const char* s) { value(std::string_view(s)); }
  void value(std::uint64_t v) {
    separate();
    std::fprintf(out_, "%llu", static_cast<unsigned long long>(v));
  }
  void value(bool b) {
    separate();
    std::fputs(b ? "true" : "false", out_);
  }
  // A number with `decimals` digits after the point (e.g. a percentage).
  void value_fixed(double v, int decimals) {
    separate();
    std::fprintf(out_, "%.*f", decimals, v);
  }

  // Shorthands for a member.
  template <class T>
  void member(std::string_view k, const T& v) {
    key(k);
    value(v);
  }

  // Ends the document with a newline.
  void finish() { std::fputc('\n', out_); }

 private:
  struct Level {
    bool empty;  // no member or element written yet
  };

  void open(char c) {
    separate();
    std::fputc(c, out_);
    stack_.push_back({true});
  }
  void close(char c) {
    const bool was_empty = stack_.empty() || stack_.back().empty;
    if (!stack_.empty()) stack_.pop_back();
    if (!was_empty) newline();
    std::fputc(c, out_);
  }
  // Before any value or key: a comma if needed, and the indentation.
  void separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (stack_.empty()) return;
    if (!stack_.back().empty) std::fputc(',', out_);
    stack_.back().empty = false;
    newline();
  }
  void newline() {
    std::fputc('\n', out_);
    for (std::size_t i = 0; i < stack_.size(); ++i) std::fputs("  ", out_);
  }

  // Length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
  static std::size_t utf8_length(std::string_view s, std::size_t i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (b0 < 0x80) return 1;
    if (b0 >= 0xc2 && b0 <= 0xdf) {
      n = 2;
      cp = b0 & 0x1fu;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      n = 3;
      cp = b0 & 0x0fu;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      n = 4;
      cp = b0 & 0x07u;
    } else {
      return 0;
    }
    if (i + n > s.size()) return 0;
    for (std::size_t k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xc0u) != 0x80u) return 0;
      cp = (cp << 6) | (b & 0x3fu);
    }
    // No overlong forms, no surrogates, nothing past U+10FFFF.
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    return n;
  }

  void write_string(std::string_view s) {
    std::string o = "\"";
    for (std::size_t i = 0; i < s.size();) {
      const char c = s[i];
      const auto u = static_cast<unsigned char>(c);
      if (u >= 0x80) {
        const std::size_t n = utf8_length(s, i);
        if (n == 0) {
          o += "\\ufffd";
          ++i;
        } else {
          o.append(s.substr(i, n));
          i += n;
        }
        continue;
      }
      switch (c) {
        case '"':
          o += "\\\"";
          break;
        case '\\':
          o += "\\\\";
          break;
        case '\b':
          o += "\\b";
          break;
        case '\f':
          o += "\\f";
          break;
        case '\n':
          o += "\\n";
          break;
        case '\r':
          o += "\\r";
          break;
        case '\t':
          o += "\\t";
          break;
        default:
          if (u < 0x20 || u == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(u));
            o += buf;
          } else {
            o.push_back(c);
          }
      }
      ++i;
    }
    o.push_back('"');
    std::fputs(o.c_str(), out_);
  }

  std::FILE* out_;
  std::vector<Level> stack_;
  bool after_key_ = false;
};

}  // namespace llbitmap::tool
