#!/bin/sh
# selftest.sh - the runner must catch deliberately broken testees (issue 4):
# one that leaks a descriptor, one that accepts out-of-order handle indices,
# one that returns a different descriptor than it received, one that never
# reads the descriptors sent on fd 3 (they would stay queued, unseen by /proc), one
# that parks a copy of a sent descriptor in a socket's queue (unseen by /proc: the
# hang-up check of the object's other end sees it); and a failure list entry whose
# case passes must fail the run.  Descriptors are checked by identity: a testee that
# opens files of its own and keeps them must pass.  Codec class: a codec-class
# testee that accepts a conn handle on an fd entry, or returns the handle table in
# another order, is caught.  Env: RUNNER, TESTEE, PYTESTEE (the Python testee's
# command line, e.g. "/usr/bin/python3 python/conformance_testee.py").
set -u
: "${RUNNER:?}" "${TESTEE:?}" "${PYTESTEE:?}"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
bad=0

# expect BREAK ONLY CASE TEXT: the run of $cmd (word-split) fails and CASE fails with TEXT
cmd=$TESTEE
expect() {
	out="$tmp/out.$1"
	# shellcheck disable=SC2086
	CHAN_TESTEE_BREAK=$1 "$RUNNER" --only "$2" -- $cmd >"$out" 2>&1
	rc=$?
	if [ "$rc" -ne 1 ]; then
		echo "selftest: broken testee '$1': runner exit status $rc, expected 1"; bad=1; return
	fi
	if ! grep -q "^FAIL $3: .*$4" "$out"; then
		echo "selftest: broken testee '$1': no 'FAIL $3: ...$4' line:"; sed 's/^/  /' "$out"; bad=1; return
	fi
	echo "selftest: broken testee '$1' caught: $(grep "^FAIL $3:" "$out" | head -1)"
}

expect leak 'handles.table.three' 'handles.table.three' 'unexpected descriptor'
expect order 'handles.index.*' 'handles.index.repeat' 'expected error HANDLE_INDEX_OUT_OF_ORDER, testee accepted'
expect swapfd 'handles.fd.memfd' 'handles.fd.memfd' 'is not the object #0 sent'
expect noread 'handles.table.three' 'handles.table.three' 'without reading the 3 descriptor'
expect hide 'handles.table.three' 'handles.table.three' 'a pipe_read sent to the testee is still open somewhere'

# issue 14 §5: vectors that fail for the violation they name.  A testee whose
# own send loop attaches the descriptors to every write of a partial send; one
# that sends without MSG_NOSIGNAL to a closed peer (dies of SIGPIPE); one that
# walks 100,000 nested lists recursively with no depth check (stack overflow);
# one that leaves the SCM_PIDFD of a read on a socket with SO_PASSPIDFD open; one
# that takes a listening or never-connected AF_UNIX stream socket for a conn;
# a lenient base64 decoder (unused bits) and a lenient JSON reader (trailing comma)
expect reattach 'large.echo.*' 'large.echo.bytes_1mib_two_fds' 'attached descriptors to byte [1-9]'
expect sigpipe 'transport.peer_closed.*' 'transport.peer_closed.send' 'died of signal 13 (SIGPIPE)'
expect recurse 'large.depth.*' 'large.depth.lists_100000' 'the testee died of signal'
expect pidfd 'transport.passcred.*' 'transport.passcred.handles' 'pidfd(s) of the runner'
expect typeonly 'handles.wrong_kind.*' 'handles.wrong_kind.listener' 'expected error WRONG_HANDLE_KIND, testee accepted'
expect typeonly 'handles.wrong_kind.*' 'handles.wrong_kind.unconnected' 'expected error WRONG_HANDLE_KIND, testee accepted'
expect lenientb64 'strings.text.bytes_*' 'strings.text.bytes_unused_bits_two_pad' 'expected error INVALID_TEXT, testee encoded'
expect lenientjson 'containers.text.*' 'containers.text.trailing_comma_list' 'expected error INVALID_JSON, testee encoded'

# revision 1.1: a testee that sends a HELLO to a peer it knows nothing about (a 1.0
# peer), one that answers nothing to the runner's HELLO, one that gives read-ahead
# descriptors to the first frame of its read instead of the frame that owns them
expect hello 'revision11.peer10.*' 'revision11.peer10.echo' 'right after attach (a HELLO unprompted?)'
cmd=$PYTESTEE
expect nohello 'revision11.hello.answered' 'revision11.hello.answered' 'is not its HELLO'
expect readahead 'revision11.readahead.*' 'revision11.readahead.second_frame' 'receive of frame 1: error TOO_MANY_HANDLES'
cmd=$TESTEE
# a testee that declares no revision is a 1.0 testee: no 1.1 case is run, none fails
if CHAN_TESTEE_REVISION=1.0 "$RUNNER" --only 'revision11.*' -- "$TESTEE" >"$tmp/out.r10" 2>&1 &&
   grep -q '^conformance: revision 1.0 .* [1-9][0-9]* revision 1.1 cases not applicable' "$tmp/out.r10"; then
	echo "selftest: a 1.0 testee is not asked revision 1.1 cases"
else
	echo "selftest: a 1.0 testee was asked revision 1.1 cases:"; sed 's/^/  /' "$tmp/out.r10"; bad=1
fi

# a testee that opens /dev/null before every request and keeps it is not leaking
# anything of the runner's: it passes (the check is by identity, not by count)
if CHAN_TESTEE_BREAK=opennull "$RUNNER" --only 'handles.*' -- "$TESTEE" >"$tmp/out.null" 2>&1; then
	echo "selftest: testee keeping descriptors of its own (/dev/null) not flagged"
else
	echo "selftest: a testee keeping /dev/null open was flagged:"; sed 's/^/  /' "$tmp/out.null"; bad=1
fi

# codec class: a codec-class testee that lies is caught
cmd="$PYTESTEE --class codec"
expect kindlie 'handles.wrong_kind.*' 'handles.wrong_kind.pipe_read' 'expected error WRONG_HANDLE_KIND, testee accepted'
expect idswap 'handles.table.three' 'handles.table.three' 'is not entry #0 sent'
# ... and the honest one passes them, with the transport cases not applicable
# shellcheck disable=SC2086
if ! "$RUNNER" --only 'handles.*' -- $cmd >"$tmp/out.codec" 2>&1 ||
   ! grep -q '^conformance: class codec .*[1-9][0-9]* not applicable' "$tmp/out.codec"; then
	echo "selftest: the codec-class Python testee fails:"; sed 's/^/  /' "$tmp/out.codec"; bad=1
fi
cmd=$TESTEE

# a stale failure list fails the run
printf 'scalars.null  # pretend it fails\n' >"$tmp/failing.txt"
"$RUNNER" --only 'scalars.null' --failing "$tmp/failing.txt" -- "$TESTEE" >"$tmp/out.stale" 2>&1
if [ $? -ne 1 ] || ! grep -q 'listed as failing but passes' "$tmp/out.stale"; then
	echo "selftest: a stale failure list entry did not fail the run"; cat "$tmp/out.stale"; bad=1
else
	echo "selftest: stale failure list entry caught"
fi

# the unbroken testee passes the same cases
if ! "$RUNNER" --only 'handles.*' -- "$TESTEE" >"$tmp/out.good" 2>&1; then
	echo "selftest: the reference testee fails:"; cat "$tmp/out.good"; bad=1
fi
[ $bad -eq 0 ] && echo "selftest: runner self-test passed"
exit $bad
