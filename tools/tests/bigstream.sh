#!/bin/bash
# bigstream.sh MIB : decode a MIB-MiB stream of frames through a pipe and
# check that chancodec's peak memory does not grow with the stream: its max
# RSS must stay within 8 MiB of what decoding a single 4 MiB chunk takes
# (a baseline, so the check also holds for ASan builds).  Four kinds of frames (256 KiB of bytes, a map of handles,
# 2000 floats, 70000 characters), made once by chancodec encode, repeated.
set -u
CC=${CHANCODEC:?}
MIB=${1:-64}
# ASan keeps freed memory in a quarantine (256 MiB by default), which would
# look like growth; without it an ASan build is bounded like any other.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0"
T=$(mktemp -d /tmp/chancodec-big.XXXXXX)
trap 'rm -rf "$T"' EXIT

/usr/bin/python3 - "$T/four.json" <<'PY'
import base64, json, os, sys
with open(sys.argv[1], "w") as f:
    blob = base64.b64encode(os.urandom(256 * 1024 - 16 - 8)).decode()
    f.write('{"$bytes":"%s"}\n' % blob)
    f.write(json.dumps({"k%d" % i: {"$fd": i} for i in range(50)}) + "\n")
    f.write(json.dumps([i * 0.1 for i in range(2000)]) + "\n")
    f.write(json.dumps("x" * 50000 + "é" * 20000) + "\n")
PY
"$CC" encode "$T/four.json" >"$T/four.bin" || exit 1
# 16 copies (about 4 MiB) per cat, so the generator costs little
for ((i = 0; i < 16; i++)); do cat "$T/four.bin"; done >"$T/chunk.bin"
size=$(stat -c %s "$T/chunk.bin")
reps=$(((MIB * 1048576 + size - 1) / size))
total=$((reps * size))
/usr/bin/time -f %M -o "$T/rss0" "$CC" decode "$T/chunk.bin" >/dev/null || exit 1
base=$(tail -1 "$T/rss0")
LIMIT_KB=$((base + 8192))
start=$EPOCHREALTIME
lines=$(
	set -o pipefail
	for ((i = 0; i < reps; i++)); do cat "$T/chunk.bin"; done |
		/usr/bin/time -f %M -o "$T/rss" "$CC" decode | wc -l
)
rc=$?
end=$EPOCHREALTIME
rss=$(tail -1 "$T/rss")
secs=$(awk "BEGIN { printf \"%.1f\", $end - $start }")
echo "bigstream: $((total / 1048576)) MiB, $((reps * 64)) frames, decoded in ${secs}s, max RSS ${rss} KiB (one chunk: ${base} KiB, limit ${LIMIT_KB} KiB)"
[ "$rc" = 0 ] || { echo "bigstream: decode failed"; exit 1; }
[ "$lines" = $((reps * 64)) ] || { echo "bigstream: $lines lines, want $((reps * 64))"; exit 1; }
[ "$rss" -le "$LIMIT_KB" ] || { echo "bigstream: max RSS $rss KiB over $LIMIT_KB KiB"; exit 1; }
