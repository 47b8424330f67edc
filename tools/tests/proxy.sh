#!/usr/bin/env bash
# chancodec proxy, end to end with real processes (issue 16):
#  1. a request carrying a file and a reply_to connection goes through
#     `proxy --follow`; the reply that comes back on reply_to is shown on the
#     followed link (1.1), and the client gets it;
#  2. --json writes one JSON object per frame (jq reads every line);
#  3. a hostile stream (a good frame, a malformed one, a good one, then
#     garbage) reaches the server the same with and without the proxy;
#  4. the demo runs through `proxy --follow`: every request, every reply and
#     every future's resolution appear in the transcript, labelled by link.
set -euo pipefail
CHANCODEC=${CHANCODEC:?set CHANCODEC to the chancodec binary}
DEMO=${CHAN_DEMO:?set CHAN_DEMO to the chan-demo binary}
d=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$d"; }
trap cleanup EXIT
fail() { echo "proxy: $*"; exit 1; }
waitsock() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.02; done; fail "no socket $1"; }
passed=0

# 1 + 2: follow a reply_to, in text and in JSON
for mode in text json; do
	rm -f "$d"/*.sock
	"$CHANCODEC" listen --reply '{"ok":true}' "$d/server.sock" >"$d/server.out" 2>/dev/null &
	pids+=($!)
	waitsock "$d/server.sock"
	"$CHANCODEC" proxy --follow $([ $mode = json ] && echo --json) -o "$d/t.$mode" \
		"$d/proxy.sock" "$d/server.sock" 2>/dev/null &
	pids+=($!)
	waitsock "$d/proxy.sock"
	got=$(echo '{"op":"get","file":{"$fd":0},"reply_to":{"$conn":1}}' |
		timeout 10 "$CHANCODEC" send --fd 0=/etc/hosts --reply 1 "$d/proxy.sock")
	[ "$got" = '{"ok":true}' ] || fail "$mode: the client got '$got' through the proxy"
	grep -qx '{"op":"get","file":{"$fd":0},"reply_to":{"$conn":1}}' "$d/server.out" ||
		fail "$mode: the server did not get the request"
	for _ in $(seq 100); do grep -q '"ok"' "$d/t.$mode" 2>/dev/null && break; sleep 0.02; done
	kill "${pids[@]}" 2>/dev/null || true
	wait 2>/dev/null || true
	pids=()
	if [ $mode = text ]; then
		grep -q '^# 1 > .* 2 handles$' "$d/t.text" || fail "text: no request line on link 1"
		grep -qx '{"op":"get","file":{"$fd":0},"reply_to":{"$conn":1}}' "$d/t.text" ||
			fail "text: the request's value is not shown"
		grep -q '^# #0 fd: type=regular .*path=/etc/hosts$' "$d/t.text" ||
			fail "text: the file descriptor is not described"
		grep -q '^#   followed as link 1.1$' "$d/t.text" || fail "text: reply_to not followed"
		grep -A1 '^# 1.1 > ' "$d/t.text" | grep -qx '{"ok":true}' ||
			fail "text: the reply is not shown on link 1.1"
	else
		jq -e . "$d/t.json" >/dev/null || fail "json: a line is not JSON"
		[ "$(jq -r 'select(.link=="1.1") | .value.ok' "$d/t.json")" = true ] ||
			fail "json: no reply on link 1.1"
		[ "$(jq -r 'select(.link=="1") | .handles[1].followed' "$d/t.json")" = 1.1 ] ||
			fail "json: handle 1 not marked followed"
	fi
	passed=$((passed + 1))
done

# 3: a hostile stream is seen by the server as without the proxy
printf '{"a":[1,2.5,{"$bytes":"3q2+7w=="}]}\n' | "$CHANCODEC" encode >"$d/good"
printf 'CHAN\001\000\000\000\000\000\000\000\003\000\000\000\377\377\377' >"$d/malformed"
printf 'garbage!garbage!' >"$d/garbage"
cat "$d/good" "$d/malformed" "$d/good" "$d/garbage" >"$d/stream"
run_server() { # $1: where the client connects, or "" for directly
	rm -f "$d"/*.sock
	"$CHANCODEC" listen --once "$d/server.sock" >"$d/s.out" 2>"$d/s.err" &
	local s=$!
	waitsock "$d/server.sock"
	local target=$d/server.sock p=
	if [ -n "$1" ]; then
		"$CHANCODEC" proxy -o "$d/hostile.t" "$d/proxy.sock" "$d/server.sock" 2>/dev/null &
		p=$!
		waitsock "$d/proxy.sock"
		target=$d/proxy.sock
	fi
	/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(open(sys.argv[2], "rb").read()); s.shutdown(socket.SHUT_WR)
s.recv(1); s.close()' "$target" "$d/stream"
	wait $s || true
	[ -n "$p" ] && { kill $p 2>/dev/null || true; wait $p 2>/dev/null || true; }
	# what the server saw, without its connection's pid and the socket path
	sed -e 's/pid=[0-9]* //' -e "s|$d/||g" "$d/s.out" "$d/s.err" | grep -v 'listening on'
}
direct=$(run_server "")
proxied=$(run_server proxy)
[ "$direct" = "$proxied" ] || { diff <(echo "$direct") <(echo "$proxied"); fail "hostile stream: the server saw something else through the proxy"; }
echo "$direct" | grep -q MALFORMED || fail "hostile stream: the malformed frame was not reported"
echo "$direct" | grep -q BAD_MAGIC || fail "hostile stream: the garbage was not reported"
grep -q '^# not decoded: MALFORMED' "$d/hostile.t" || fail "hostile stream: the proxy did not report the malformed frame"
grep -q 'not chan frames from here on (BAD_MAGIC)' "$d/hostile.t" || fail "hostile stream: the proxy did not report the garbage"
passed=$((passed + 1))

# 4: the demo through the proxy, following every connection: its reply_to
# run (the channel run is checked after it)
CHAN_DEMO_PROXY="$CHANCODEC proxy --follow -o $d/demo.t" "$DEMO" --reply-to >"$d/demo.out" 2>&1 ||
	{ tail -5 "$d/demo.out"; fail "the demo failed through the proxy"; }
requests=$(grep -c '"op":"square"\|"op":"fib"' "$d/demo.t" || true)
answers=$(grep -c '^{"value":' "$d/demo.t" || true)
futures=$(grep -c '^{"future":' "$d/demo.t" || true)
resolved=$(grep -A1 -E '^# [0-9]+\.[0-9]+\.[0-9]+ ' "$d/demo.t" | grep -c '^{"value":' || true)
[ "$requests" = 12 ] && [ "$answers" = 12 ] && [ "$futures" = 4 ] && [ "$resolved" = 4 ] ||
	fail "demo transcript: $requests requests, $answers answers, $futures futures, $resolved resolved on nested links (want 12, 12, 4, 4)"
passed=$((passed + 1))

# 5: the demo's channel run (revision 1.1) through the proxy: the proxy reads
# each direction as 1.1 once a HELLO passed, and every frame on a channel says so
CHAN_DEMO_PROXY="$CHANCODEC proxy --follow -o $d/demo11.t" "$DEMO" --channels >"$d/demo11.out" 2>&1 ||
	{ tail -5 "$d/demo11.out"; fail "the demo's channel run failed through the proxy"; }
onchannels=$(grep -c 'channel [<>]' "$d/demo11.t" || true)
[ "$onchannels" -ge 12 ] || fail "demo channel transcript: $onchannels frames on channels (want >= 12)"
passed=$((passed + 1))
echo "proxy: $passed passed, 0 failed"
