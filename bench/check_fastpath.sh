#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# check_fastpath.sh FILE...: checks that the read side that runs is the inlined one
# (docs/design.md#the-write-fast-path). FILE is the static archive (libllbitmap.a), the
# shared library (libllbitmap.so) or a program linked against the static archive.
#
# For each fast-path function (PercpuRef::tryget_live/get/put/tryget,
# PageBarrier::raise/release, Bitmap::start_write/end_write) it disassembles the body and
# fails if
#   - the function is missing (moved or renamed: update the list below);
#   - it calls or jumps to liburcu's called read side (urcu_bp_read_lock/unlock,
#     urcu_bp_register), to __tls_get_addr (general- or local-dynamic TLS), to a C++
#     TLS init wrapper (missing -fno-extern-tls-init), or to a clock;
#   - it calls anything other than the other fast-path functions or an out-of-line
#     *_slow / put_atomic function (the fast path is a leaf apart from those); the
#     Bitmap functions may also call what their error branches need (check_failed,
#     std::generic_category, llbitmap::make_error_code, invalid_range) and the
#     page-by-page raise and release of their multi-chunk path (start_write_raise,
#     raise_range, release_range);
#   - it carries a general/local-dynamic TLS relocation (object files only);
#   - it contains a lock-prefixed (atomic read-modify-write) instruction.
# An mfence is allowed: liburcu-bp's inlined read side has one on the branch taken only
# when membarrier() is unavailable; the script reports how many it saw.
#
# check_fastpath.sh --skip REASON ...: prints the reason and exits 77 (ctest's
# SKIP_RETURN_CODE). CMake passes it for builds where nothing is inlined or where the
# read side is meant to be called: unoptimised, sanitized or sync-point builds.
set -eu

if [ $# -ge 2 ] && [ "$1" = "--skip" ]; then
  echo "skipped: $2"
  exit 77
fi
if [ $# -eq 0 ]; then
  echo "usage: $0 [--skip REASON] FILE..." >&2
  exit 2
fi

OBJDUMP=${OBJDUMP:-objdump}
FUNCS='llbitmap::PercpuRef::tryget_live()
llbitmap::PercpuRef::get(unsigned long)
llbitmap::PercpuRef::put(unsigned long)
llbitmap::PercpuRef::tryget(unsigned long)
llbitmap::PageBarrier::raise()
llbitmap::PageBarrier::release()
llbitmap::Bitmap::start_write(unsigned long, unsigned long)
llbitmap::Bitmap::end_write(unsigned long, unsigned long)'

status=0
for file in "$@"; do
  if [ ! -r "$file" ]; then
    echo "FAIL $file: not readable (build it first)"
    status=1
    continue
  fi
  dis=$(mktemp)
  "$OBJDUMP" -d -r -C --no-show-raw-insn "$file" >"$dis"
  printf '%s\n' "$FUNCS" | while IFS= read -r fn; do
    # awk prints one line per finding: "OK <n-insns> <n-mfence> <calls>" or "BAD <why>".
    out=$(awk -v fn="$fn" '
      function target(line,   t) {
        # "call 4100 <sym@plt>" or "jmp 2f9 <sym+0x4>" -> sym
        if (match(line, /<[^>]*>/) == 0) return "";
        t = substr(line, RSTART + 1, RLENGTH - 2);
        sub(/@plt$/, "", t);
        return t;
      }
      function note_call(t) {
        if (t == "" ) return;
        base = t; sub(/[+-]0x[0-9a-f]+$/, "", base);
        if (base == fn || base == fn " [clone .cold]") return;  # inside the function or its cold part
        if (base ~ /urcu_bp_read_lock|urcu_bp_read_unlock|urcu_bp_register|__tls_get_addr|TLS init function|TLS wrapper function|_ZTW|_ZTH|clock_gettime|steady_clock|::now\(/) {
          bad = bad " calls " base ";";
        } else if (base !~ /^llbitmap::PercpuRef::(tryget_live|tryget|get|put)\(/ &&
                   base !~ /_slow\(/ && base !~ /::put_atomic\(/ &&
                   !(fn ~ /^llbitmap::Bitmap::/ && base ~ /^(llbitmap::detail::check_failed|std::_V2::generic_category|llbitmap::make_error_code|llbitmap::BitmapImpl::start_write_raise|llbitmap::BitmapImpl::start_write_slow|llbitmap::\(anonymous namespace\)::(raise_range|release_range|invalid_range))\(/)) {
          bad = bad " unexpected call " base ";";
        }
        calls = calls (calls == "" ? "" : ",") base;
      }
      BEGIN { want = "<" fn ">:"; inside = 0; n = 0; mf = 0; bad = ""; calls = ""; found = 0 }
      {
        if (!inside) {
          if (index($0, want) > 0 && $0 ~ /^[0-9a-f]+ </) { inside = 1; found = 1; pending = 0 }
          next;
        }
        if ($0 ~ /^[ \t]*$/) { inside = 0; next }
        if ($0 ~ /R_X86_64_/) {
          # relocation line (object files): resolves the preceding call/jmp target
          r = $0; sub(/^[ \t]*[0-9a-f]+:[ \t]*/, "", r);
          split(r, f, /[ \t]+/);
          if (f[1] ~ /TLSGD|TLSLD|DTPOFF|GOTPC32_TLSDESC|TLSDESC_CALL/) bad = bad " dynamic-TLS relocation " f[1] " " f[2] ";";
          if (pending && f[1] ~ /PLT32|PC32/) { s = r; sub(/^[^ \t]+[ \t]+/, "", s); note_call(s); pending = 0 }
          next;
        }
        if (pending) { note_call(pending_t); pending = 0 }
        n++;
        if ($0 ~ /\tlock /) bad = bad " lock-prefixed insn:" $0 ";";
        if ($0 ~ /\tmfence/) mf++;
        if ($0 ~ /__tls_get_addr|urcu_bp_read_lock|urcu_bp_read_unlock|urcu_bp_register/) bad = bad " references" $0 ";";
        if ($0 ~ /[\t ](call|jmp)[a-z]* /) {
          if ($0 ~ /(call|jmp)[a-z]*[ \t]+\*/) { bad = bad " indirect branch:" $0 ";"; next }
          pending = 1; pending_t = target($0);
        }
      }
      END {
        if (pending) note_call(pending_t);
        if (!found) { print "MISSING"; exit }
        if (bad != "") print "BAD" bad;
        else print "OK " n " instructions in the body, " mf " mfence (no-membarrier branch), calls: " (calls == "" ? "none" : calls);
      }' "$dis")
    case "$out" in
      OK*) echo "ok   $(basename "$file"): $fn: ${out#OK }" ;;
      MISSING)
        echo "FAIL $(basename "$file"): $fn not found (renamed, or now defined in a header: update check_fastpath.sh)"
        echo x >>"$dis.fail" ;;
      *)
        echo "FAIL $(basename "$file"): $fn:${out#BAD}"
        echo x >>"$dis.fail" ;;
    esac
  done
  if [ -e "$dis.fail" ]; then status=1; rm -f "$dis.fail"; fi
  # A shared library must use the static (initial-exec) TLS model throughout.
  case "$file" in
    *.so | *.so.*)
      if readelf -d "$file" | grep -q 'STATIC_TLS'; then
        echo "ok   $(basename "$file"): DF_STATIC_TLS set (initial-exec TLS)"
      else
        echo "FAIL $(basename "$file"): DF_STATIC_TLS not set: TLS is not initial-exec"
        status=1
      fi ;;
  esac
  rm -f "$dis"
done
exit $status
