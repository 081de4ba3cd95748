#!/bin/sh
# Compiles and links c-tests/sample/ha_status.c with the exact line the README
# documents, then runs it. The line is taken from README.md (the line after
# the marker "<!-- link-line -->") when the README has one; otherwise the
# default below, which is what the README should show.
set -eu
cd "$(dirname "$0")/.."
DEFAULT='cc -Iinclude prog.c -Ltarget/release -lconfd_ha -Wl,-rpath,$PWD/target/release -o prog'
LINE=""
if [ -f README.md ] && grep -q '<!-- link-line -->' README.md; then
    LINE=$(sed -n '/<!-- link-line -->/{n;:a;/^```/{n;ba};p;q}' README.md | sed 's/^\$ //')
fi
[ -n "$LINE" ] || LINE=$DEFAULT
case "$LINE" in
    *prog.c*) ;;
    *) echo "link-line: the README line does not compile prog.c: $LINE"; exit 1 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp c-tests/sample/ha_status.c "$tmp/prog.c"
# Run the line from the repository root, with prog.c and prog in the scratch dir.
LINE_HERE=$(printf '%s' "$LINE" | sed -e "s# prog\.c# $tmp/prog.c#" -e "s#-o prog#-o $tmp/prog#")
echo "link-line: $LINE"
sh -c "$LINE_HERE"
out=$("$tmp/prog" --version)
echo "link-line: prog printed: $out"
case "$out" in
    "libconfd_ha "*) echo "link-line: PASS" ;;
    *) echo "link-line: FAIL (unexpected output)"; exit 1 ;;
esac
