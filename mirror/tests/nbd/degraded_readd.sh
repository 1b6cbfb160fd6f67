#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# degraded_readd.sh: degraded writes followed by a re-add that copies only what changed.
#
#   1. A new 64 MiB mirror (64 KiB chunks) is filled with random data (nbdcopy) and
#      stopped cleanly: both legs equal, nothing to resync.
#   2. Restarted with fail=secondary (degraded): fio writes 1 MiB at 8 MiB and 512 KiB at
#      40 MiB (crc32c verify headers), and nbdkit is stopped cleanly. The secondary must
#      be untouched (equal to the image) and the bitmap must hold exactly the 24 chunks
#      written, as NeedSync.
#   3. Restarted without fail= (the re-add): the start-up resync must copy exactly those
#      24 chunks (1.5 MiB, its log line), fio verifies the degraded writes through the
#      plugin, and after a clean stop both legs are identical.
#
# Usage: degraded_readd.sh PLUGIN TOOL
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

size=$((64 << 20))
p=$work/p s=$work/s b=$work/b
files=(primary="$p" secondary="$s" bitmap="$b")
head -c $size /dev/urandom >"$work/image"

step "fill a new mirror, clean stop"
nbd_start "${files[@]}" size=64M chunk=64K
timeout 60 nbdcopy "$work/image" "$uri"
nbd_stop
cmp "$work/image" "$s" || fail "the secondary differs from the image"
cmp "$p" "$s" || fail "the legs differ after a clean stop"

step "degraded (fail=secondary): write 1 MiB at 8 MiB and 512 KiB at 40 MiB"
nbd_start "${files[@]}" fail=secondary
grep -q 'secondary marked failed' "$log" || fail "the plugin did not run degraded"
run_fio rw=write bs=4k offset=8M size=1M verify=crc32c do_verify=0
run_fio rw=write bs=4k offset=40M size=512k verify=crc32c do_verify=0
nbd_stop
cmp -s "$work/image" "$p" && fail "the degraded writes did not reach the primary"
cmp "$work/image" "$s" || fail "the failed secondary was written while degraded"
read -r chunks bytes < <(examine_resync "$b")
echo "bitmap after the degraded run: $chunks chunks ($bytes bytes) to resync"
((chunks == 24)) || fail "the bitmap records $chunks chunks to resync, 24 were written"

step "re-add (restart without fail=): copies the 24 chunks only"
nbd_start "${files[@]}"
line=$(resync_line)
[[ -n $line ]] || fail "no resync at the re-add: $(cat "$log")"
echo "$line"
read -r copied_chunks copied_bytes < <(resync_numbers)
((copied_chunks == 24)) || fail "the re-add copied $copied_chunks chunks, not 24"
((copied_bytes == 24 * 65536)) || fail "the re-add copied $copied_bytes bytes, not 1.5 MiB"
run_fio rw=write bs=4k offset=8M size=1M verify=crc32c verify_only=1
run_fio rw=write bs=4k offset=40M size=512k verify=crc32c verify_only=1
nbd_stop
cmp "$p" "$s" || fail "the legs differ after the re-add"
echo "PASS"
