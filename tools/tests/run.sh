#!/bin/bash
# chancodec tests: text <-> binary round trips, conformance vectors, golden
# outputs, every exit status and error path, a live listen/send exchange with
# real descriptors, and a stream of frames decoded in bounded memory.
#
#   CHANCODEC=build/chancodec tools/tests/run.sh
#   UPDATE_GOLDEN=1 ...   rewrites tools/tests/golden/*.out (review the diff!)
#
# Needs /usr/bin/python3, jq, groff.  Exit status: 0 if every check passed.
set -u
CC=${CHANCODEC:?set CHANCODEC to the chancodec binary}
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
G=$HERE/golden
PY=/usr/bin/python3
T=$(mktemp -d /tmp/chancodec-test.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT

pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
	fail=$((fail + 1))
	echo "FAIL: $*"
}

# check NAME CMD... : CMD must succeed
check() {
	local name=$1
	shift
	if "$@"; then ok; else bad "$name"; fi
}

# same NAME WANT GOT : files equal byte for byte
same() {
	if cmp -s "$2" "$3"; then
		ok
	else
		bad "$1: $3 differs from $2"
		diff -u "$2" "$3" | head -20
	fi
}

# golden NAME FILE : FILE equals golden/NAME (or becomes it, UPDATE_GOLDEN=1)
golden() {
	if [ -n "${UPDATE_GOLDEN:-}" ]; then
		cp "$2" "$G/$1"
		ok
	else
		same "golden/$1" "$G/$1" "$2"
	fi
}

# hex2bin "43 48 ..." > file  (builtins only: this runs often)
hex2bin() {
	local h=${1//[$' \n']/} out="" i
	for ((i = 0; i < ${#h}; i += 2)); do out+="\\x${h:i:2}"; done
	printf "$out"
}

# frame FLAGS HANDLE_COUNT PAYLOAD_HEX [VERSION] : a frame, in hex
le16() { printf '%02x %02x' $(($1 & 255)) $(($1 >> 8 & 255)); }
le32() { printf '%02x %02x %02x %02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
frame() {
	local p=${3// /}
	echo "43 48 41 4e $(printf %02x "${4:-1}") $(printf %02x "$1") $(le16 "$2") 00 00 00 00 $(le32 $((${#p} / 2))) $3"
}

# frame11 FLAGS CHANNEL HANDLE_COUNT PAYLOAD_HEX : a frame with revision 1.1
# header fields (SPEC.md §17.1, §18.1), in hex
frame11() {
	local p=${4// /}
	echo "43 48 41 4e 01 $(printf %02x "$1") $(le16 "$3") $(le32 "$2") $(le32 $((${#p} / 2))) $4"
}

# expect NAME RC ERRNAME CMD... : exit status RC and, if ERRNAME is not -,
# a first stderr line "chancodec: FILE: ERRNAME: ...".  Appends the case to
# $T/errors.out for the golden comparison.
expect() {
	local name=$1 rc=$2 en=$3 got first="" line
	shift 3
	"$@" >"$T/out" 2>"$T/err"
	got=$?
	echo "## $name (exit $got)" >>"$T/errors.out"
	while IFS= read -r line; do
		[ -z "$first" ] && first=$line
		echo "${line//$T/TMP}"
	done <"$T/err" >>"$T/errors.out"
	if [ "$got" != "$rc" ]; then
		bad "$name: exit $got, want $rc: $first"
		return
	fi
	case "$first" in
	"chancodec: "*": $en: "*) ok ;;
	*) if [ "$en" = - ]; then ok; else bad "$name: stderr '$first' does not name $en"; fi ;;
	esac
}

echo "chancodec tests ($CC)"

# ---- text -> binary -> text, binary -> text -> binary --------------------
"$CC" encode "$HERE/roundtrip.json" >"$T/rt.bin"
check "encode roundtrip.json" test $? = 0
"$CC" decode "$T/rt.bin" >"$T/rt.txt"
same "text -> binary -> text" "$HERE/roundtrip.json" "$T/rt.txt"
"$CC" encode "$T/rt.txt" >"$T/rt2.bin"
same "binary -> text -> binary" "$T/rt.bin" "$T/rt2.bin"
"$CC" decode --pretty "$T/rt.bin" | "$CC" encode >"$T/rt3.bin"
same "binary -> pretty text -> binary" "$T/rt.bin" "$T/rt3.bin"
"$CC" check "$T/rt.bin"
check "check accepts every round-trip frame" test $? = 0
n=$(grep -c '' "$HERE/roundtrip.json")
check "one frame per value" test "$("$CC" check -v "$T/rt.bin")" = "$T/rt.bin: OK: $n frames"
# every output line is strict JSON for Python's json and for jq
check "decode output parses with Python json" "$PY" -c '
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    json.loads(line)
' "$T/rt.txt"
check "decode output parses with jq" sh -c "jq -c . '$T/rt.txt' >/dev/null"
"$CC" decode --pretty "$T/rt.bin" >"$T/rt.pretty"
check "pretty output parses with jq" sh -c "jq -c . '$T/rt.pretty' >/dev/null"
# pretty is jq's layout: jq -c of it equals jq -c of the canonical text
jq -c . "$T/rt.txt" >"$T/jq1"
jq -c . "$T/rt.pretty" >"$T/jq2"
same "pretty and canonical are the same JSON" "$T/jq1" "$T/jq2"
# a stream of values with no newlines between them, and pretty input
tr '\n' ' ' <"$HERE/roundtrip.json" | "$CC" encode >"$T/rt4.bin"
same "values separated by spaces" "$T/rt.bin" "$T/rt4.bin"

# non-canonical input is accepted and printed canonically
"$CC" encode "$G/noncanon.json" | "$CC" decode >"$T/noncanon.out"
golden noncanon.out "$T/noncanon.out"

# ---- floats against Python's shortest repr --------------------------------
check "floats: shortest round-trip digits, ECMAScript layout" "$PY" "$HERE/floats.py" "$CC" 20000

# ---- conformance vectors -------------------------------------------------
if ls "$TOP"/conformance/vectors/*.vec >/dev/null 2>&1; then
	check "conformance vectors round-trip through chancodec" "$PY" "$HERE/vectors.py" "$CC" "$TOP/conformance/vectors"
else
	bad "no conformance vectors found in $TOP/conformance/vectors"
fi

# ---- golden outputs ------------------------------------------------------
"$CC" encode "$G/sample.json" >"$T/sample.bin"
od -An -tx1 -v "$T/sample.bin" >"$T/sample.hex"
golden sample.hex "$T/sample.hex"
"$CC" decode "$T/sample.bin" >"$T/sample.decode"
golden sample.decode "$T/sample.decode"
"$CC" decode --pretty "$T/sample.bin" >"$T/sample.pretty"
golden sample.pretty "$T/sample.pretty"
"$CC" dump "$T/sample.bin" >"$T/sample.dump"
golden sample.dump "$T/sample.dump"
# dump of an invalid stream: annotated as far as it parses, verdict per frame
{
	hex2bin "$(frame 0 0 '10 02')"              # NONCANONICAL bool
	hex2bin "$(frame 0 0 '2a 03 61 ff')"        # length past the end
	hex2bin "$(frame 0 1 '4a 04 08 81 00 10')"  # non-minimal varint, cut
	hex2bin "$(frame 0 0 '50 00 0a 00')"        # unknown field
	hex2bin "43 48 41 4e 01 00 00 00"           # truncated header
} >"$T/bad.bin"
"$CC" dump "$T/bad.bin" >"$T/bad.dump"
check "dump of invalid frames exits 1" test $? = 1
golden bad.dump "$T/bad.dump"
# revision 1.1: channel handles in the text form (SPEC.md §18.2 rule 3) encode
# as Value field 10, Channel{id}: protoc's bytes; decoding them needs --revision 1.1
"$CC" encode "$G/channels.json" >"$T/ch.bin"
od -An -tx1 -v "$T/ch.bin" >"$T/channels.hex"
golden channels.hex "$T/channels.hex"
"$CC" decode --revision 1.1 "$T/ch.bin" >"$T/ch.txt"
same "channels: text -> binary -> text (--revision 1.1)" "$G/channels.json" "$T/ch.txt"
"$CC" check --revision 1.0 "$T/ch.bin" 2>"$T/ch.err"
check "channels: revision 1.0 (the default) says UNKNOWN_FIELD" \
	test $? = 1 -a "$(cut -d: -f3 "$T/ch.err")" = " UNKNOWN_FIELD"
if command -v protoc >/dev/null; then
	printf 'map_value { entries { key: "op" value { string_value: "get" } } entries { key: "reply" value { channel_value { id: 1 } } } }' |
		protoc --proto_path="$TOP/proto" --encode=chan.v1.Value chan/v1/chan.proto >"$T/pc.bin"
	"$CC" encode <<<'{"op":"get","reply":{"$channel":1}}' | tail -c +17 >"$T/cc.bin"
	same "channels: the payload is protoc's" "$T/pc.bin" "$T/cc.bin"
fi
# payload TEXT : the payload of TEXT's frame, in hex
payload() { od -An -tx1 -v < <("$CC" encode <<<"$1") | tr '\n' ' ' | cut -c 50-; }
# a 1.1 stream: HELLO, a channel handle, END on the channel, close, epitaph,
# optional and critical reserved bits, channel 0x80000000; dumped as 1.0 and 1.1
{
	hex2bin "$(frame11 1 0 0 "$(payload '{"op":"hello","features":{"epitaph":{},"channels":{}},"require":["channels"]}')")"
	hex2bin "$(frame11 0 0 0 '42 0f 0a 0d 0a 05 72 65 70 6c 79 12 04 52 02 08 01')"
	hex2bin "$(frame11 2 1 0 '2a 04 6c 61 73 74')"
	hex2bin "$(frame11 3 $((0x80000002)) 0 '42 1b 0a 0d 0a 02 6f 70 12 07 2a 05 63 6c 6f 73 65 0a 0a 0a 04 63 6f 64 65 12 02 18 4a')"
	hex2bin "$(frame11 1 0 0 "$(payload '{"op":"epitaph","code":3,"message":"too big"}')")"
	hex2bin "$(frame11 $((0x10)) 0 0 '18 02')"
	hex2bin "$(frame11 4 0 0 '18 02')"
	hex2bin "$(frame11 0 $((0x80000000)) 0 '18 02')"
	hex2bin "$(frame11 1 0 1 "$(payload '{"op":"hello","features":{},"h":{"$fd":0}}')")"
	hex2bin "$(frame11 0 0 0 '52 02 08 00')"
	hex2bin "$(frame11 0 0 0 '52 06 08 80 80 80 80 08')"
	hex2bin "$(frame11 0 0 0 '52 00')"
} >"$T/s11.bin"
"$CC" dump "$T/s11.bin" >"$T/channels.dump"
check "dump of 1.1 frames as 1.0 exits 1" test $? = 1
golden channels.dump "$T/channels.dump"
"$CC" dump --revision 1.1 "$T/s11.bin" >"$T/channels11.dump"
check "dump --revision 1.1 of invalid 1.1 frames exits 1" test $? = 1
golden channels11.dump "$T/channels11.dump"
check "dump of 1.0 frames is the same with --revision 1.1" \
	sh -c "'$CC' dump --revision 1.1 '$T/sample.bin' | cmp -s - '$G/sample.dump'"
# --count stops early and leaves the rest unread
check "--count 2" test "$("$CC" decode -n 2 "$T/sample.bin" | wc -l)" = 2
check "decode reads files in order" test "$("$CC" decode "$T/sample.bin" "$T/sample.bin" | wc -l)" = 8

# ---- exit statuses and error paths ----------------------------------------
: >"$T/errors.out"
# usage (2)
expect "no command" 2 - "$CC"
expect "unknown command" 2 - "$CC" frobnicate
expect "unknown option" 2 - "$CC" decode --frobnicate
expect "limit above the hard maximum" 2 - "$CC" decode --max-payload 2G
expect "bad --count" 2 - "$CC" decode --count 0
expect "listen without PATH" 2 - "$CC" listen
expect "send without PATH" 2 - "$CC" send
expect "send: bad --fd" 2 - "$CC" send --fd x=/etc/hosts "$T/nosock"
expect "send: --fd and --reply on one handle" 2 - "$CC" send --fd 1=/etc/hosts --reply 1 "$T/nosock"
expect "send: --fd N=- with text on stdin" 2 - "$CC" send --fd 0=- "$T/nosock"
expect "listen: --reply with a handle" 2 - "$CC" listen --reply '{"$fd":0}' "$T/nosock"
check "encode refuses a terminal" sh -c "script -qec '$CC encode </dev/null' /dev/null | grep -q 'refusing to write binary frames to a terminal'"
# I/O (2, SYSTEM)
expect "missing file" 2 SYSTEM "$CC" decode "$T/missing.bin"
expect "missing text file" 2 SYSTEM "$CC" encode "$T/missing.json"
expect "directory" 2 SYSTEM "$CC" decode "$T"
expect "unwritable output" 2 SYSTEM "$CC" encode -o "$T/no/such/dir" "$G/sample.json"
expect "write error" 2 SYSTEM sh -c "'$CC' decode '$T/sample.bin' >/dev/full"
expect "send to no listener" 2 SYSTEM "$CC" send "$T/nosock" "$G/sample.json"
expect "send: --fd file missing" 2 SYSTEM "$CC" send --fd 0="$T/missing" "$T/nosock"
# text rejected (1)
t() { # t NAME ERRNAME TEXT
	printf '%s\n' "$3" >"$T/in.json"
	expect "text: $1" 1 "$2" "$CC" encode -o "$T/x.bin" "$T/in.json"
}
t "not JSON" INVALID_JSON '[1,'
t "NaN literal" INVALID_JSON 'NaN'
t "scalars not separated" INVALID_JSON '1"a"'
t "trailing comma" INVALID_JSON '[1,]'
t "duplicate key" DUPLICATE_KEY '{"a":1,"a":2}'
# INVALID_JSON wins over faults met before the syntax error (SPEC.md §12.4 rule 4)
t "duplicate key, then a trailing comma" INVALID_JSON '[{"a":1,"a":2},]'
t "lone surrogate, then a trailing comma" INVALID_JSON '["\ud800",]'
t "float overflow, then a trailing comma" INVALID_JSON '[1e400,]'
t "int overflow, then a letter" INVALID_JSON '9223372036854775808x'
t "U+0000 in a key, then a trailing comma" INVALID_JSON '{"a\u0000":1,}'
t "duplicate key, then the end" INVALID_JSON '{"a":1,"a":2'
t "5000 open brackets" INVALID_JSON "$(printf '%.0s[' $(seq 5000))"
t "5000 levels closed by a brace" INVALID_JSON "$(printf '%.0s[' $(seq 5000))$(printf '%.0s]' $(seq 4999))}"
t "5000 levels, valid JSON" DEPTH_EXCEEDED "$(printf '%.0s[' $(seq 5000))$(printf '%.0s]' $(seq 5000))"
printf '["\xff",]\n' >"$T/in.json"
expect "text: invalid UTF-8, then a trailing comma" 1 INVALID_JSON "$CC" encode -o "$T/x.bin" "$T/in.json"
# after INVALID_JSON, the first fault in document order, whether or not a JSON
# library would meet it while parsing; handle count and indices last (issue 14 §6)
t "bad \$int, then a duplicate key" INVALID_TEXT '[{"$int":"x"},{"a":1,"a":2}]'
t "duplicate key, then a bad \$int" DUPLICATE_KEY '[{"a":1,"a":2},{"$int":"x"}]'
t "unknown marker, then a lone surrogate" INVALID_TEXT '[{"$x":1},"\ud800"]'
t "marker not alone, then U+0000 in a key" INVALID_TEXT '[{"$int":"1","a":2},{"a\u0000":1}]'
t "bad \$fd, then an int beyond int64" INVALID_TEXT '{"a":{"$fd":-1},"b":9223372036854775808}'
t "float overflow, then a duplicate key" INVALID_TEXT '[1e400,{"a":1,"a":2}]'
t "too deep, then a bad \$int" DEPTH_EXCEEDED "[$(printf '%.0s[' $(seq 32))$(printf '%.0s]' $(seq 32)),{\"\$int\":\"x\"}]"
t "bad \$int, then 5000 levels" INVALID_TEXT "[{\"\$int\":\"x\"},$(printf '%.0s[' $(seq 5000))$(printf '%.0s]' $(seq 5000))]"
t "handle index, then a bad \$int" INVALID_TEXT '[{"$fd":1},{"$int":"x"}]'
t "handle index, then a lone surrogate" INVALID_UTF8 '[{"$conn":7},"\udc00"]'
t "254 handles out of order" HANDLE_LIMIT_EXCEEDED "[$(for i in $(seq 0 253); do printf '{"$fd":0},'; done)0]"
t "a marker's argument is not walked" INVALID_TEXT '{"$int":[{"a":1,"a":2},"\ud800",1e400]}'
# several faults in one key: '$' rule, then U+0000, then not Unicode
t "key: single \$ and U+0000" INVALID_TEXT '{"$\u0000":1}'
t "key: U+0000 and a lone surrogate" INVALID_KEY '{"a\u0000\ud800":1}'
t "key: \$\$, U+0000, a lone surrogate" INVALID_KEY '{"$$\ud800\u0000":1}'
# where the Python reader departs from the spec (tools/tests/syntax_diff.py)
printf '{"\xff":{"a":1,"a":2}}\n' >"$T/in.json"
expect "text: key not UTF-8, then a duplicate key in its value" 1 INVALID_UTF8 "$CC" encode -o "$T/x.bin" "$T/in.json"
t "\$fd index beyond int64" INVALID_TEXT '{"$fd":99999999999999999999}'
t "an int of 5000 digits" INVALID_TEXT "$(printf '%.0s9' $(seq 5000))"
t "100000 levels, valid JSON" DEPTH_EXCEEDED "$(printf '%.0s[' $(seq 100000))$(printf '%.0s]' $(seq 100000))"
check "text: INVALID_JSON exactly when Python's json says not JSON (1500 mutated documents), and the Python reader's answer for 1500 documents with several faults" \
	python3 "$HERE/syntax_diff.py" "$CC" 1500 7
printf '1\n[{"a":1,"a":2}]\n[3]\n' >"$T/in.json"
expect "text: duplicate key in the second document" 1 DUPLICATE_KEY "$CC" encode -o "$T/x.bin" "$T/in.json"
check "the first document is written" test "$("$CC" decode "$T/x.bin" | tr '\n' ' ')" = "1 "
t "duplicate key after unescaping" DUPLICATE_KEY '{"$$a":1,"$$a":2}'
t "lone surrogate" INVALID_UTF8 '"\ud800"'
t "U+0000 in a key" INVALID_KEY '{"a\u0000":1}'
t "int beyond int64" INVALID_TEXT '9223372036854775808'
t "float beyond binary64" INVALID_TEXT '1e400'
t "unknown marker" INVALID_TEXT '{"$x":1}'
t "single-\$ key in a map" INVALID_TEXT '{"a":1,"$b":2}'
t "marker not alone" INVALID_TEXT '{"$int":"1","a":2}'
t "\$int not a string" INVALID_TEXT '{"$int":1}'
t "\$int leading zero" INVALID_TEXT '{"$int":"01"}'
t "\$int out of range" INVALID_TEXT '{"$int":"9223372036854775808"}'
t "\$int minus zero" INVALID_TEXT '{"$int":"-0"}'
t "\$int with U+0000 inside" INVALID_TEXT '{"$int":"12\u00003"}'
t "\$float with U+0000 inside" INVALID_TEXT '{"$float":"NaN\u0000x"}'
t "\$float unknown" INVALID_TEXT '{"$float":"nan"}'
t "\$bytes no padding" INVALID_TEXT '{"$bytes":"AA"}'
t "\$bytes pad bits" INVALID_TEXT '{"$bytes":"AB=="}'
t "\$bytes bad char" INVALID_TEXT '{"$bytes":"A-=="}'
t "\$fd negative" INVALID_TEXT '{"$fd":-1}'
t "\$conn not an int" INVALID_TEXT '{"$conn":"0"}'
# {"$channel":ID}: 1..2^31-1 under the rules of $fd (SPEC.md §18.2 rule 3)
t "\$channel 0" INVALID_TEXT '{"$channel":0}'
t "\$channel -0 (is 0)" INVALID_TEXT '{"$channel":-0}'
t "\$channel a float" INVALID_TEXT '{"$channel":1.0}'
t "\$channel 1e0" INVALID_TEXT '{"$channel":1e0}'
t "\$channel 2^31" INVALID_TEXT '{"$channel":2147483648}'
t "\$channel a string" INVALID_TEXT '{"$channel":"1"}'
t "\$channel not alone" INVALID_TEXT '{"$channel":1,"a":2}'
t "handle index out of range" HANDLE_INDEX_OUT_OF_RANGE '[{"$fd":0},{"$fd":2}]'
t "handle index repeated" HANDLE_INDEX_OUT_OF_ORDER '[{"$fd":0},{"$fd":0}]'
t "handle index decreasing" HANDLE_INDEX_OUT_OF_ORDER '[{"$fd":1},{"$fd":0}]'
t "depth 33" DEPTH_EXCEEDED "$(printf '%.0s[' $(seq 33))$(printf '%.0s]' $(seq 33))"
t "254 handles" HANDLE_LIMIT_EXCEEDED "[$(for i in $(seq 0 253); do printf '{"$fd":%d},' "$i"; done)0]"
printf '"\xff"\n' >"$T/in.json"
expect "text: invalid UTF-8 byte" 1 INVALID_UTF8 "$CC" encode -o "$T/x.bin" "$T/in.json"
printf '1\n2\n[3,\n' >"$T/in.json"
expect "text: error after good values" 1 INVALID_JSON "$CC" encode -o "$T/x.bin" "$T/in.json"
check "frames before the error are written" test "$("$CC" decode "$T/x.bin" | tr '\n' ' ')" = "1 2 "
# frames rejected (1): every error a frame file can show
f() { # f NAME ERRNAME HEX [OPTIONS...]
	local name=$1 en=$2 hex=$3
	shift 3
	hex2bin "$hex" >"$T/f.bin"
	expect "check: $name" 1 "$en" "$CC" check "$@" "$T/f.bin"
	expect "decode: $name" 1 "$en" "$CC" decode "$@" "$T/f.bin"
}
f "short header" TRUNCATED "43 48 41 4e 01 00 00"
f "short payload" TRUNCATED "$(frame 0 0 '0a 00' | sed 's/ 0a 00$/ 0a/')"
f "bad magic" BAD_MAGIC "$(frame 0 0 '0a 00' | sed 's/^43 48 41 4e/43 48 41 4f/')"
f "version 2" UNSUPPORTED_VERSION "$(frame 0 0 '0a 00' 2)"
f "payload over the limit" PAYLOAD_TOO_LARGE "$(frame 0 0 "$(printf '%.0s00 ' $(seq 17))")" --max-payload 16
f "payload over 16 MiB" PAYLOAD_TOO_LARGE "43 48 41 4e 01 00 00 00 00 00 00 00 01 00 00 01"
f "flags" RESERVED_FIELD_NONZERO "$(frame 1 0 '0a 00')"
f "channel" RESERVED_FIELD_NONZERO "$(frame 0 0 '0a 00' | sed 's/^\(.\{24\}\)00/\101/')"
f "65 handles" HANDLE_LIMIT_EXCEEDED "$(frame 0 65 '0a 00')"
f "3 handles, limit 2" HANDLE_LIMIT_EXCEEDED "$(frame 0 3 '0a 00')" --max-handles 2
f "length missing" MALFORMED "$(frame 0 0 '0a')"
f "unknown field" UNKNOWN_FIELD "$(frame 0 0 '50 00')"
f "bool 2" NONCANONICAL "$(frame 0 0 '10 02')"
f "empty payload" EMPTY_VALUE "$(frame 0 0 '')"
f "depth 2, limit 1" DEPTH_EXCEEDED "$(frame 0 0 '3a 04 0a 02 3a 00')" --max-depth 1
f "string ff" INVALID_UTF8 "$(frame 0 0 '2a 01 ff')"
f "key with U+0000" INVALID_KEY "$(frame 0 0 '42 09 0a 07 0a 01 00 12 02 0a 00')"
f "key twice" DUPLICATE_KEY "$(frame 0 0 '42 12 0a 07 0a 01 61 12 02 0a 00 0a 07 0a 01 61 12 02 0a 00')"
f "kind 3" UNKNOWN_HANDLE_KIND "$(frame 0 1 '4a 02 10 03')"
f "index 1 of 1" HANDLE_INDEX_OUT_OF_RANGE "$(frame 0 1 '4a 04 08 01 10 01')"
f "index 1 then 0" HANDLE_INDEX_OUT_OF_ORDER "$(frame 0 2 '3a 0e 0a 06 4a 04 08 01 10 01 0a 04 4a 02 10 01')"
f "handle never referenced" UNREFERENCED_HANDLE "$(frame 0 1 '0a 00')"
# revision 1.1 headers and channel handles, read as 1.0 and as 1.1
f "HELLO read as 1.0" RESERVED_FIELD_NONZERO "$(frame11 1 0 0 '42 0f 0a 0d 0a 02 6f 70 12 07 2a 05 68 65 6c 6c 6f')"
f "channel 1 read as 1.0" RESERVED_FIELD_NONZERO "$(frame11 0 1 0 '0a 00')"
f "channel handle read as 1.0" UNKNOWN_FIELD "$(frame11 0 0 0 '52 02 08 01')"
f "channel handle read as 1.0 (--revision 1.0)" UNKNOWN_FIELD "$(frame11 0 0 0 '52 02 08 01')" --revision 1.0
f "critical reserved flag, 1.1" RESERVED_FIELD_NONZERO "$(frame11 4 0 0 '0a 00')" --revision 1.1
f "END on channel 0, 1.1" RESERVED_FIELD_NONZERO "$(frame11 2 0 0 '0a 00')" --revision 1.1
f "channel 0x80000000, 1.1" UNKNOWN_CHANNEL "$(frame11 0 $((0x80000000)) 0 '0a 00')" --revision 1.1
f "Channel.id 0 written, 1.1" NONCANONICAL "$(frame11 0 0 0 '52 02 08 00')" --revision 1.1
f "Channel.id absent, 1.1" UNKNOWN_CHANNEL "$(frame11 0 0 0 '52 00')" --revision 1.1
f "Channel.id 2^31, 1.1" UNKNOWN_CHANNEL "$(frame11 0 0 0 '52 06 08 80 80 80 80 08')" --revision 1.1
expect "bad --revision" 2 - "$CC" decode --revision 2 "$T/f.bin"
hex2bin "$(frame11 3 $((0x80000002)) 0 '42 0f 0a 0d 0a 02 6f 70 12 07 2a 05 63 6c 6f 73 65')$(frame11 $((0x12)) 7 0 '52 02 08 01')" >"$T/f.bin"
check "1.1: close on a channel and END with an optional bit decode" \
	test "$("$CC" decode --revision 1.1 "$T/f.bin" | tr '\n' ' ')" = '{"op":"close"} {"$channel":1} '
# the error names the frame: the second frame of a file is the bad one
{ hex2bin "$(frame 0 0 '0a 00')"; hex2bin "$(frame 0 0 '10 02')"; } >"$T/f.bin"
expect "second frame bad" 1 NONCANONICAL "$CC" decode "$T/f.bin"
check "decode prints the frames before the error" test "$(cat "$T/out")" = null
check "the error says which frame" grep -q 'frame 1 at byte 18' "$T/err"
# an empty input holds no frames: fine
check "empty input" sh -c "'$CC' decode </dev/null && '$CC' check </dev/null"
golden errors.out "$T/errors.out"

# ---- live: listen and send with real descriptors --------------------------
# wait_listening ERRFILE : until the listener said it is listening
wait_listening() {
	local i
	for i in $(seq 200); do
		grep -q 'listening on' "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
S=$T/s.sock
"$CC" listen --once --reply '{"ok":true,"n":{"$int":"-9223372036854775808"}}' "$S" >"$T/l.out" 2>"$T/l.err" &
L=$!
PIDS+=("$L")
check "listener starts" wait_listening "$T/l.err"
echo '{"file":{"$fd":0},"reply_to":{"$conn":1}}' |
	"$CC" send --fd 0=/etc/hosts --reply 1 "$S" >"$T/s.out" 2>"$T/s.err"
check "send exits 0" test $? = 0
check "send prints the reply" test "$(cat "$T/s.out")" = '{"ok":true,"n":{"$int":"-9223372036854775808"}}'
wait "$L"
check "listen --once exits 0 when the connection ends" test $? = 0
check "listener prints the message" grep -qx '{"file":{"$fd":0},"reply_to":{"$conn":1}}' "$T/l.out"
ino=$(stat -L -c %i /etc/hosts)
dev=$(stat -L -c '%Hd:%Ld' /etc/hosts)
check "handle #0 is /etc/hosts: a regular file, same inode" \
	grep -qx "# #0 fd: type=regular dev=$dev ino=$ino access=r cloexec=yes path=$(readlink -f /etc/hosts)" "$T/l.out"
check "handle #1 is a unix stream socket" grep -q '^# #1 conn: type=socket socket=unix/stream .* cloexec=yes path=socket:\[' "$T/l.out"
check "the listener answered on #1" grep -qx '# replied on #1' "$T/l.out"
check "the socket file is removed" test ! -e "$S"

# abstract name, stdin as the descriptor, several messages, no reply
A="@chancodec-test-$$"
"$CC" listen --count 2 "$A" >"$T/l2.out" 2>"$T/l2.err" &
L=$!
PIDS+=("$L")
check "abstract listener starts" wait_listening "$T/l2.err"
printf '{"stdin":{"$fd":0}}\n[1,2]\n' >"$T/msgs.json"
"$CC" send --fd 0=- "$A" "$T/msgs.json" <"$G/sample.json" >"$T/s2.out"
check "send of two messages exits 0" test $? = 0
wait "$L"
check "listen --count 2 exits 0" test $? = 0
ino=$(stat -c %i "$G/sample.json")
check "stdin arrives as the file it was" grep -q "^# #0 fd: type=regular .* ino=$ino " "$T/l2.out"
check "both messages arrive in order" test "$(grep -v '^#' "$T/l2.out" | tr '\n' ' ')" = '{"stdin":{"$fd":0}} [1,2] '

# a fifo as the descriptor; a listener that does not answer: CONNECTION_CLOSED
"$CC" listen --once "$S" >"$T/l3.out" 2>"$T/l3.err" &
L=$!
PIDS+=("$L")
check "third listener starts" wait_listening "$T/l3.err"
mkfifo "$T/fifo"
exec 7<>"$T/fifo"
echo '[{"$fd":0},{"$conn":1}]' >"$T/m.json"
expect "no reply: CONNECTION_CLOSED" 1 CONNECTION_CLOSED "$CC" send --fd '0=&7' --reply 1 "$S" "$T/m.json"
exec 7<&-
wait "$L"
check "the fifo arrives as a fifo" grep -q "^# #0 fd: type=fifo .* access=rw cloexec=yes path=$T/fifo\$" "$T/l3.out"
# text that cannot be sent: the listener sees the connection close, nothing else
"$CC" listen --count 1 "$S" >"$T/l4.out" 2>"$T/l4.err" &
L=$!
PIDS+=("$L")
wait_listening "$T/l4.err"
echo '{"$fd":0}' >"$T/m.json"
expect "send: handle without --fd" 2 INVALID_ARGUMENT "$CC" send "$S" "$T/m.json"
echo '{"$conn":0}' >"$T/m.json"
expect "send: a file as a conn" 1 WRONG_HANDLE_KIND "$CC" send --fd 0=/etc/hosts "$S" "$T/m.json"
echo '"last"' | "$CC" send "$S"
wait "$L"
check "only the good message arrived" test "$(grep -v '^#' "$T/l4.out")" = '"last"'
# a raw peer sends a bad frame, then a good one: the bad one is reported by
# name, the connection stays in sync, the good one is printed
"$CC" listen --count 1 "$S" >"$T/l6.out" 2>"$T/l6.err" &
L=$!
PIDS+=("$L")
wait_listening "$T/l6.err"
"$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
hdr = lambda n: b"CHAN\x01\x00\x00\x00\x00\x00\x00\x00" + bytes([n, 0, 0, 0])
s.sendall(hdr(2) + b"\x10\x02" + hdr(2) + b"\x18\x54")
s.close()
' "$S"
wait "$L"
check "listen: a rejected frame makes the exit status 1" test $? = 1
check "listen: the bad frame is named" grep -q "^chancodec: $S: NONCANONICAL: connection 0: " "$T/l6.err"
check "listen: the next frame is read in sync" test "$(grep -v '^#' "$T/l6.out")" = 42
# revision 1.1: a raw 1.1 peer (peer11.py) sends a HELLO, a request with a
# channel handle, and frames on that channel; listen answers the HELLO, shows
# the features, keeps the channel and shows its frames
"$CC" encode <<<'{"op":"hello","features":{"epitaph":{},"channels":{}}}' >"$T/hello.bin"
"$CC" encode <<<'{"q":"get","reply":{"$channel":1}}' >"$T/req.bin"
"$CC" encode <<<'"on the channel"' >"$T/onch.bin"
"$CC" encode <<<'{"op":"epitaph","code":3,"message":"your frame is too large"}' >"$T/epi.bin"
"$CC" listen --count 3 "$S" >"$T/l11.out" 2>"$T/l11.err" &
L=$!
PIDS+=("$L")
wait_listening "$T/l11.err"
"$PY" "$HERE/peer11.py" "$S" "$T/got11.bin" send:1:0:"$T/hello.bin" read:1 send:0:0:"$T/req.bin" \
	send:0:1:"$T/onch.bin" send:2:1:"$T/onch.bin"
check "1.1 peer: exchange done" test $? = 0
wait "$L"
check "listen: a 1.1 conversation exits 0" test $? = 0
grep -v pid= "$T/l11.out" >"$T/listen11.out"
"$CC" dump --revision 1.1 "$T/got11.bin" >>"$T/listen11.out"
# with --hello and --reply: listen speaks first, answers on the channel (END),
# and shows the epitaph the peer ends with
"$CC" listen --once --hello --reply '"r"' "$S" >"$T/l12.out" 2>"$T/l12.err" &
L=$!
PIDS+=("$L")
wait_listening "$T/l12.err"
"$PY" "$HERE/peer11.py" "$S" "$T/got12.bin" read:1 send:1:0:"$T/hello.bin" send:0:0:"$T/req.bin" \
	read:1 send:0:0:"$T/onch.bin" send:1:0:"$T/epi.bin" wait
check "1.1 peer with --hello: exchange done" test $? = 0
wait "$L"
check "listen --hello --reply: exits 0" test $? = 0
check "listen --hello --reply: nothing on stderr but the banner" test "$(grep -vc 'listening on' "$T/l12.err")" = 0
grep -v pid= "$T/l12.out" >>"$T/listen11.out"
"$CC" dump --revision 1.1 "$T/got12.bin" >>"$T/listen11.out"
golden listen11.out "$T/listen11.out"
# no descriptor leaks: 150 messages with a file and a reply connection each,
# both processes limited to 24 open descriptors
(ulimit -n 24 && exec "$CC" listen --count 150 --reply '"r"' "$S") >"$T/l7.out" 2>"$T/l7.err" &
L=$!
PIDS+=("$L")
wait_listening "$T/l7.err"
for i in $(seq 150); do echo '{"f":{"$fd":0},"r":{"$conn":1}}'; done >"$T/many.json"
(ulimit -n 24 && exec "$CC" send --fd 0=/etc/hosts --reply 1 "$S" "$T/many.json") >"$T/s7.out" 2>"$T/s7.err"
check "send: 150 requests under ulimit -n 24" test $? = 0 -a "$(grep -c '^"r"$' "$T/s7.out")" = 150
wait "$L"
check "listen: 150 requests under ulimit -n 24" test $? = 0 -a "$(grep -c '^# replied on #1$' "$T/l7.out")" = 150
"$CC" listen "$S" >/dev/null 2>"$T/l5.err" &
L=$!
PIDS+=("$L")
wait_listening "$T/l5.err"
expect "listen on a path in use" 2 SYSTEM "$CC" listen "$S"
kill -TERM "$L"
wait "$L"
check "listen exits 0 on SIGTERM and removes its socket" test $? = 0 -a ! -e "$S"

# ---- bounded memory on a long stream ---------------------------------------
check "64 MiB stream of frames decodes in bounded memory" "$HERE/bigstream.sh" 64

# ---- man page and help -----------------------------------------------------
check "man page lints clean" sh -c "groff -man -ww -z '$TOP/tools/chancodec.1' 2>&1 | (! grep .)"
for c in "" encode decode check dump listen send proxy; do
	check "help $c" sh -c "'$CC' $c --help | grep -q '^Usage: chancodec'"
done

echo "chancodec tests: $pass passed, $fail failed"
[ "$fail" = 0 ]
