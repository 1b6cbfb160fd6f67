#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# kill_resync.sh: nbdkit killed with SIGKILL in the middle of a fio write job, restarted,
# the legs resynced and compared byte for byte.
#
# A SIGKILL keeps every write the process made in the page cache, so both legs usually
# survive it intact; what a crash can really lose is the copy of a write that reached
# one leg only. The test puts that damage back on purpose: after the kill it overwrites
# the secondary with random bytes in every range the bitmap says a reopen must resync
# (llbitmap examine), then restarts nbdkit, whose start-up resync must copy exactly those
# chunks back (its log line is compared with examine's count) and leave both legs equal.
#
#   llbitmap  a 64 MiB mirror (64 KiB chunks), fio randwrite with 2 jobs to an 8 MiB
#             region, kill after 2 s: the resync copies the Dirty chunks only.
#   none      the same without a bitmap: the secondary is damaged at a few places
#             across the device, and the restart must copy the whole device.
#
# Usage: kill_resync.sh PLUGIN TOOL
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

size=$((64 << 20))

# write_then_kill OFFSET SIZE: random 4 KiB writes confined to that region.
write_then_kill() {
  # fio runs longer than we let it: nbdkit dies under it, so fio fails; ignore that.
  timeout 60 fio --ioengine=nbd --uri="$uri" --name=crash --rw=randwrite --bs=4k \
    --iodepth=16 --numjobs=2 --time_based --runtime=30 --offset="$1" --size="$2" \
    >"$work/fio-crash.out" 2>&1 &
  local fio_pid=$!
  sleep 2
  kill -0 "$fio_pid" 2>/dev/null || { cat "$work/fio-crash.out" >&2; fail "fio ended before the kill"; }
  nbd_crash
  wait "$fio_pid" || true
}

# --- llbitmap
p=$work/p s=$work/s b=$work/b
step "llbitmap: fio randwrite to 8 MiB at offset 8 MiB, SIGKILL nbdkit after 2 s"
nbd_start primary="$p" secondary="$s" bitmap="$b" size=64M chunk=64K
write_then_kill 8M 8M

read -r chunks bytes < <(examine_resync "$b")
echo "bitmap after the kill: $chunks chunks ($bytes bytes) to resync"
((chunks > 0)) || fail "no chunk to resync after a kill in the middle of writes"
((bytes <= 8 << 20)) || fail "the bitmap wants $bytes bytes resynced; fio wrote to 8 MiB only"
nranges=$(scribble_resync_ranges "$b" "$s")
echo "damaged the secondary in $nranges ranges"
cmp -s "$p" "$s" && fail "the legs are equal after damaging the secondary"

step "llbitmap: restart; the start-up resync copies the Dirty chunks"
nbd_start primary="$p" secondary="$s" bitmap="$b"
line=$(resync_line)
[[ -n $line ]] || fail "no resync after the crash: $(cat "$log")"
echo "$line"
read -r copied_chunks copied_bytes < <(resync_numbers)
((copied_chunks == chunks)) || fail "resync copied $copied_chunks chunks, the bitmap had $chunks"
((copied_bytes == bytes)) || fail "resync copied $copied_bytes bytes, the bitmap had $bytes"
# The device is usable after the resync: a short verified write and read.
run_fio rw=randwrite bs=4k iodepth=8 size=4M verify=crc32c do_verify=1
nbd_stop
cmp "$p" "$s" || fail "llbitmap: the legs differ after the resync"
read -r chunks bytes < <(examine_resync "$b")
((chunks == 0)) || fail "the bitmap still wants $chunks chunks resynced after a clean stop"

# --- none: no bitmap, so a crash means a full resync
p=$work/np s=$work/ns
step "none: fio randwrite, SIGKILL nbdkit after 2 s"
nbd_start primary="$p" secondary="$s" mode=none size=64M
write_then_kill 0 64M
for off in 0 $((17 << 20)) $((42 << 20)) $((size - 4096)); do
  damage "$s" "$off" 4096
done
cmp -s "$p" "$s" && fail "the legs are equal after damaging the secondary"

step "none: restart; the start-up resync copies the whole device"
nbd_start primary="$p" secondary="$s" mode=none
line=$(resync_line)
[[ -n $line ]] || fail "no resync after the crash in mode=none: $(cat "$log")"
echo "$line"
read -r copied_chunks copied_bytes < <(resync_numbers)
((copied_bytes == size)) || fail "mode=none resync copied $copied_bytes bytes, not the whole $size"
nbd_stop
cmp "$p" "$s" || fail "none: the legs differ after the full resync"
echo "PASS"
