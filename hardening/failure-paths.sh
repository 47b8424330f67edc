#!/bin/sh
# failure-paths.sh DIR - from the gcov files in DIR (libchan built with
# --coverage and run by the injection tests), every line of libchan that
# handles a resource failure, with how often the tests ran it:
#  - a line that returns or records NO_MEMORY or SYSTEM;
#  - a `return NULL` / `return CHAN_E_...` right after the check of an
#    allocation (`x = ...alloc...(...); if (!x)`).
# Lines never run are marked NOT-REACHED.
dir=$1
for g in "$dir"/*.c.gcov; do
	awk -v src="$(basename "$g" .gcov)" -F: '
		{ count = $1; gsub(/ /, "", count); line = $2 + 0
		  text = $0; sub(/^[^:]*:[^:]*:/, "", text) }
		line > 0 {
			hit = text ~ /CHAN_E_NO_MEMORY|CHAN_E_SYSTEM/ && text !~ /^[ \t]*(\*|\/\*|\/\/)/ && text !~ /==|!=/
			if (!hit && text ~ /return/ && prev ~ /if \(!/ && prev2 ~ /alloc|strdup/)
				hit = 1
			if (hit) {
				status = (count == "#####" || count == "=====") ? "NOT-REACHED" : count
				t = text; gsub(/^[ \t]+/, "", t)
				printf "%-16s %5d  %-12s %s\n", src, line, status, t
			}
			prev2 = prev; prev = text
		}' "$g"
done | tee "$dir/../failure-paths.txt"
n=$(wc -l < "$dir/../failure-paths.txt")
m=$(grep -c "NOT-REACHED" "$dir/../failure-paths.txt")
echo "inject-coverage: $((n - m)) of $n resource-failure lines of c/src reached by the injection tests (list: $dir/../failure-paths.txt)"
