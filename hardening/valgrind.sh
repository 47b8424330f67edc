#!/bin/sh
# valgrind.sh - the CUnit suites under valgrind memcheck (issue 7 §4).
#
# usage: hardening/valgrind.sh CHAN_TESTS LOGDIR
#
# Runs CHAN_TESTS suite by suite under memcheck with --track-fds=yes, one log
# per process (LOGDIR/<suite>.<pid>.log), and fails if
#  - any process (the runner or a forked child) has a memory error
#    (--error-exitcode), or a CUnit test fails;
#  - the runner process leaks memory (definitely or indirectly lost), or
#    exits with a descriptor open that it did not inherit (fds beyond stdio).
# Children created by fork() exit with _exit() in the middle of a test, with
# their parent's descriptors and heap: their leak and fd reports are not
# meaningful and are not counted.
#
# Tests that cannot work under valgrind are skipped by name (SKIP below):
#  transport/rlimit_truncates_fds  valgrind emulates RLIMIT_NOFILE and keeps
#      descriptors of its own under it, so the kernel never truncates the
#      frame's descriptors the way the test needs.
set -u
bin=$1
logdir=$2
SKIP="transport/rlimit_truncates_fds"
VG="valgrind --tool=memcheck --track-fds=yes --error-exitcode=99 --leak-check=full \
	--errors-for-leak-kinds=none --show-leak-kinds=definite,indirect"

rm -rf "$logdir"
mkdir -p "$logdir"
fail=0
ran=0

# suite names and their tests, from the CU_TestInfo tables of c/tests
suites=$(sed -n 's/^CU_TestInfo \([a-z0-9_]*\)_tests\[\].*/\1/p' c/tests/*_test.c)

run() { # run LABEL ARGS...: one valgrind process tree
	label=$1
	shift
	$VG --log-file="$logdir/$label.%p.log" "$bin" "$@" >"$logdir/$label.out" 2>&1 &
	pid=$!
	wait $pid
	rc=$?
	ran=$((ran + 1))
	main="$logdir/$label.$pid.log"
	bad=""
	[ $rc -eq 0 ] || bad="exit status $rc"
	grep -q "ERROR SUMMARY: [1-9]" "$logdir/$label".*.log && bad="$bad; memcheck errors"
	if grep -Eq "(definitely|indirectly) lost: [1-9]" "$main"; then
		bad="$bad; leak"
	fi
	# descriptors open at exit that were not inherited
	open=$(awk '/Open (file descriptor|AF_UNIX socket|AF_INET)/ { fd = $0; getline; if ($0 !~ /inherited from parent/) print fd }' "$main")
	[ -z "$open" ] || bad="$bad; fds open at exit: $open"
	if [ -n "$bad" ]; then
		echo "test-valgrind: $label FAILED ($bad): see $logdir/$label.*"
		grep -E "FAILED|check failed|^ +[0-9]+\. " "$logdir/$label.out" | head -10
		fail=1
	fi
}

for s in $suites; do
	skipped=$(echo "$SKIP" | tr ' ' '\n' | sed -n "s|^$s/||p")
	if [ -z "$skipped" ]; then
		run "$s" "$s"
		continue
	fi
	# a suite with skipped tests runs test by test
	tests=$(awk -v s="${s}_tests" '$0 ~ "CU_TestInfo " s "\\[\\]" {on=1; next} on && /CU_TEST_INFO_NULL/ {on=0} on' c/tests/${s}_test.c |
		sed -n 's/.*{ *"\([^"]*\)".*/\1/p')
	for t in $tests; do
		if echo "$skipped" | grep -qx "$t"; then
			echo "test-valgrind: skipped $s/$t (see hardening/valgrind.sh)"
			continue
		fi
		run "$s.$t" "$s" "$t"
	done
done
if [ $fail -ne 0 ]; then
	echo "test-valgrind: FAILED"
	exit 1
fi
echo "test-valgrind: $ran valgrind runs clean: no memory error in any process, no leak and no fd left open in the runner"
