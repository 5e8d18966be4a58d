#!/bin/sh
# test_python.sh - the Python client's pytest suite (tests/python) against the
# freshly built emad and libemad: each test starts its own daemon on a free
# loopback port with a private state dir (tests/python/conftest.py).
#
# Uses Debian's /usr/bin/python3 (or $PYTHON3 from `make check`). Skips
# (exit 77) when numpy, torch or pytest is missing, unless EMAD_REQUIRE_TORCH=1
# (CI sets it), which turns a missing module into a failure. Bounded in time:
# the whole run under `timeout`, each test under a 300 s watchdog.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_python.sh
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
PYTHON3=${PYTHON3:-/usr/bin/python3}

for lib in "$top_builddir/.libs/libemad.so" "$top_builddir/client/.libs/libemad.so"; do
    if [ -e "$lib" ]; then
        EMAD_LIBRARY=${EMAD_LIBRARY:-$lib}
        break
    fi
done
EMAD_BIN=${EMAD_BIN:-$top_builddir/emad}

missing=
for mod in numpy torch pytest; do
    timeout 120 "$PYTHON3" -c "import $mod" >/dev/null 2>&1 || missing="$missing $mod"
done
if [ -n "$missing" ]; then
    if [ "${EMAD_REQUIRE_TORCH:-0}" = 1 ]; then
        echo "$test_name: FAIL: $PYTHON3 cannot import:$missing (EMAD_REQUIRE_TORCH=1;" \
            "Debian: apt-get install python3-numpy python3-torch python3-pytest)" >&2
        exit 1
    fi
    echo "$test_name: SKIP: $PYTHON3 cannot import:$missing" >&2
    exit 77
fi
[ -x "$EMAD_BIN" ] || { echo "$test_name: FAIL: $EMAD_BIN not built" >&2; exit 1; }
[ -n "${EMAD_LIBRARY:-}" ] && [ -e "$EMAD_LIBRARY" ] ||
    { echo "$test_name: FAIL: libemad.so not found under $top_builddir" >&2; exit 1; }

PYTHONPATH=$top_srcdir/client/python${PYTHONPATH:+:$PYTHONPATH}
PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH PYTHONDONTWRITEBYTECODE EMAD_LIBRARY EMAD_BIN

# A libemad built with --enable-asan needs the ASan runtime loaded first into Python.
asan_rt=$(ldd "$EMAD_LIBRARY" 2>/dev/null | sed -n 's/.*libasan[^ ]* => \([^ ]*\).*/\1/p')
cd "$top_srcdir"
if [ -n "$asan_rt" ]; then
    LD_PRELOAD=$asan_rt ASAN_OPTIONS=detect_leaks=0 \
        timeout 1200 "$PYTHON3" -m pytest -q -p no:cacheprovider -rs tests/python
else
    timeout 1200 "$PYTHON3" -m pytest -q -p no:cacheprovider -rs tests/python
fi
