#!/bin/sh
# `make install` into a scratch DESTDIR, then checks the installed files and
# builds and runs a program with the flags pkg-config gives for them (shared
# and static).
set -eu
MAKE=${1:-make}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$MAKE -s install DESTDIR="$tmp" PREFIX=/opt/confd_ha >/dev/null
root="$tmp/opt/confd_ha"
v=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
major=${v%%.*}
for f in lib/libconfd_ha.so.$v lib/libconfd_ha.so.$major lib/libconfd_ha.so lib/libconfd_ha.a \
         include/confd_lib.h include/confd_ha.h lib/pkgconfig/confd_ha.pc; do
    [ -e "$root/$f" ] || { echo "install-test: FAIL: $f not installed"; exit 1; }
done
soname=$(readelf -d "$root/lib/libconfd_ha.so.$v" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libconfd_ha.so.$major" ] || { echo "install-test: FAIL: soname '$soname'"; exit 1; }
# The .pc file names /opt/confd_ha; point pkg-config at the scratch copy.
export PKG_CONFIG_PATH="$root/lib/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$tmp"
pv=$(pkg-config --modversion confd_ha)
[ "$pv" = "$v" ] || { echo "install-test: FAIL: pkg-config version '$pv' != '$v'"; exit 1; }
cc $(pkg-config --cflags confd_ha) c-tests/sample/ha_status.c -o "$tmp/prog" \
   $(pkg-config --libs confd_ha) -Wl,-rpath,"$root/lib"
"$tmp/prog" --version >/dev/null
cc $(pkg-config --cflags confd_ha) c-tests/sample/ha_status.c -o "$tmp/prog_static" \
   "$root/lib/libconfd_ha.a" $(pkg-config --libs-only-other --static confd_ha) \
   $(pkg-config --static --libs confd_ha | tr ' ' '\n' | grep -v -e '^-lconfd_ha$' -e '^-L' | tr '\n' ' ')
"$tmp/prog_static" --version >/dev/null
echo "install-test: PASS (soname $soname, pkg-config $pv, shared and static link)"
