#!/bin/sh
# test_systemd.sh - the systemd units and `make install`: installing into a
# DESTDIR puts emad.service, emad@.service and the example configuration
# (which the daemon accepts) in place; `systemd-analyze verify` passes on
# both units; `systemd-analyze security --offline` rates both at an
# exposure of 2.0 or lower. Exits 77 (skip) when systemd-analyze is absent.
#
# verify needs the ExecStart binary to exist, so the installed units are
# checked with ExecStart pointing at the freshly installed emad in DESTDIR.
#
# Environment (set by `make check`): top_builddir, top_srcdir, SYSTEMD_ANALYZE.
set -eu

test_name=test_systemd.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

SYSTEMD_ANALYZE=${SYSTEMD_ANALYZE:-$(command -v systemd-analyze || true)}
if [ -z "$SYSTEMD_ANALYZE" ] || [ ! -x "$SYSTEMD_ANALYZE" ]; then
    echo "$test_name: SKIP: systemd-analyze not found (Debian: systemd)" >&2
    exit 77
fi

# 1. make install into a private DESTDIR.
dest=$work/root
timeout "$T_LONG" make -s -C "$top_builddir" install DESTDIR="$dest" >"$work/install.log" 2>&1 ||
    fail "make install failed: $(tail -n 20 "$work/install.log")"
unitdir=$(find "$dest" -type d -path '*/lib/systemd/system' | head -n 1)
[ -n "$unitdir" ] || fail "make install put no units under lib/systemd/system"
for u in emad.service emad@.service; do
    [ -f "$unitdir/$u" ] || fail "make install did not install $u"
    if grep -q '@[a-z]*@' "$unitdir/$u"; then fail "$u has unsubstituted @variables@"; fi
done
conf=$(find "$dest" -path '*/emad/emad.conf' | head -n 1)
[ -n "$conf" ] && [ -f "$conf.example" ] || fail "make install did not install emad.conf(.example)"
bin=$(find "$dest" -path '*/bin/emad' -type f | head -n 1)
[ -n "$bin" ] || fail "make install did not install emad"
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$unitdir/emad.service")
[ "$dest$exec_start" = "$bin" ] || fail "ExecStart $exec_start is not the installed $bin"
conf_in_unit=$(sed -n 's/^ExecStart=.* --config \([^ ]*\) .*/\1/p' "$unitdir/emad.service")
[ "$dest$conf_in_unit" = "$conf" ] || fail "the unit reads $conf_in_unit, make install wrote $conf"
timeout "$T" "$top_builddir/emad" --config "$conf" --print-config >"$work/printed" ||
    fail "the installed emad.conf is refused"
grep -qx 'http = 127.0.0.1:7471' "$work/printed" || fail "emad.conf: $(cat "$work/printed")"

# 2. systemd-analyze verify on both units, ExecStart pointing at the installed binary.
mkdir -p "$work/units"
for u in emad.service emad@.service; do
    sed "s|^ExecStart=$exec_start |ExecStart=$bin |" "$unitdir/$u" >"$work/units/$u"
done
(cd "$work/units" && timeout "$T" "$SYSTEMD_ANALYZE" verify --man=no emad.service emad@.service) \
    >"$work/verify" 2>&1 || fail "systemd-analyze verify: $(cat "$work/verify")"
[ ! -s "$work/verify" ] || fail "systemd-analyze verify is not clean: $(cat "$work/verify")"

# 3. Exposure 2.0 or lower ("OK") for both units.
for u in emad.service emad@.service; do
    timeout "$T" "$SYSTEMD_ANALYZE" security --offline=true --threshold=20 "$work/units/$u" \
        >"$work/security" 2>&1 || fail "systemd-analyze security $u: $(tail -n 5 "$work/security")"
    level=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p' "$work/security")
    [ -n "$level" ] || fail "no exposure level for $u: $(tail -n 3 "$work/security")"
    awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || fail "$u exposure $level > 2.0"
    echo "$test_name: $u exposure $level"
done
echo "$test_name: PASS"
