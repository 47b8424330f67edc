#!/usr/bin/env bash
# Build the Debian packages from this tree (as it is, uncommitted changes
# included), install them, and use them from outside the tree the way a user
# would: a C program built with pkg-config, chancodec, `import chan` in
# python3, and the installed conformance runner and vectors checking the
# installed Python binding.  Then remove them again.
#
# As root the packages are installed with dpkg -i (and removed at the end);
# otherwise they are unpacked with dpkg-deb -x into a scratch root and used
# from there (library and module paths pointed at it).
#
#   packaging/smoke-test.sh [TREE]
set -euo pipefail
tree=$(cd "${1:-$(dirname "$0")/..}" && pwd)
work=$(mktemp -d)
installed=()
cleanup() {
	if [ ${#installed[@]} -gt 0 ]; then
		dpkg -r "${installed[@]}" >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "packages: $*"; exit 1; }

# 1. a copy of the tree's files (tracked and new, not ignored ones) and the build
mkdir -p "$work/src/chan"
(cd "$tree" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/src/chan")
(cd "$work/src/chan" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) ||
	{ tail -30 "$work/build.log"; fail "dpkg-buildpackage failed"; }
debs=()
for p in libchan0 libchan-dev chancodec python3-chan chan-conformance; do
	f=$(ls "$work"/src/"${p}"_*.deb 2>/dev/null | head -1)
	[ -n "$f" ] || fail "no $p package was built"
	debs+=("$f")
done

# 2. install
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
root=""
if [ "$(id -u)" = 0 ]; then
	dpkg -i "${debs[@]}" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i failed"; }
	installed=(libchan0 libchan-dev chancodec python3-chan chan-conformance)
else
	root=$work/root
	for f in "${debs[@]}"; do dpkg-deb -x "$f" "$root"; done
	export PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_PATH=$root/usr/lib/$arch/pkgconfig
	export LD_LIBRARY_PATH=$root/usr/lib/$arch PYTHONPATH=$root/usr/lib/python3/dist-packages
	export PATH=$root/usr/bin:$PATH
fi

# 3. use them, from a directory that is not the tree
cd "$work"
cp "$tree/c/examples/readme_example.c" prog.c
# shellcheck disable=SC2046
cc -o prog prog.c $(pkg-config --cflags --libs chan)
./prog | grep -qx 'reply: 42 (OK)' || fail "a program built with pkg-config does not work"
[ "$(pkg-config --modversion chan)" = "$(sed -n 's/^#define CHAN_VERSION_STRING "\(.*\)"$/\1/p' "$tree/c/include/chan.h")" ] ||
	fail "chan.pc has another version than chan.h"
if [ -z "$root" ]; then
	# The library prog loads must be the file libchan0 installed (not a
	# tree build, not one under /usr/local): compare resolved paths.
	loaded=$(ldd ./prog | awk '$1 == "libchan.so.0" { print $3 }')
	want=$(dpkg -L libchan0 | grep "/libchan\.so\.0$" | head -1)
	[ -n "$loaded" ] && [ -e "$loaded" ] && [ "$(realpath "$loaded")" = "$(realpath "$want")" ] ||
		fail "prog does not load the installed libchan ($want): ldd says '$(ldd ./prog | grep libchan)'"
fi
out=$(echo '{"op":"get","n":[1,2.5]}' | chancodec encode | chancodec decode)
[ "$out" = '{"op":"get","n":[1,2.5]}' ] || fail "chancodec: got '$out'"
man -w chancodec >/dev/null 2>&1 || [ -n "$root" ] || fail "no chancodec man page"
[ -f "$root/usr/share/bash-completion/completions/chancodec" ] || fail "no chancodec bash completion"
# Debian's python3 (a python3 earlier on PATH, such as pyenv's, does not
# read /usr/lib/python3/dist-packages)
py=/usr/bin/python3
"$py" -c 'import chan, sys; f, t = chan.encode({"a": 1}); assert chan.decode(f) == {"a": 1}; assert chan.__file__.startswith(("/usr/lib/python3/", sys.argv[1])), chan.__file__' "${root:-/nonexistent}" ||
	fail "python3 does not import the installed chan"
# the installed runner and vectors check the installed Python binding
cp "$tree/python/conformance_testee.py" testee.py
runner=$(command -v chan-conformance) || fail "no chan-conformance command"
dir=${root}/usr/share/chan/conformance
"$runner" --vectors "$dir/vectors" --errors "$dir/errors.tsv" -- "$py" testee.py >"$work/conf.log" 2>&1 ||
	{ tail -20 "$work/conf.log"; fail "the installed conformance suite failed"; }
summary=$(tail -1 "$work/conf.log")
echo "packages: built ${#debs[@]} (libchan0 libchan-dev chancodec python3-chan chan-conformance), installed ($([ -z "$root" ] && echo dpkg -i || echo unpacked)), used outside the tree; installed suite: $summary"
echo "packages: 1 passed, 0 failed"
