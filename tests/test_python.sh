#!/bin/sh
# test_python.sh - the Python client's pytest suite (tests/python) against the
# freshly built emad and libemad: each test starts its own daemon on a free
# loopback port with a private state dir (tests/python/conftest.py).
#
# Uses Debian's /usr/bin/python3 (or $PYTHON3 from `make check`). Skips
# (exit 77) when numpy, torch or pytest is missing, unless EMAD_REQUIRE_TORCH=1
# (CI sets it), which turns a missing module into a failure. Bounded in time:
# the whole run under `timeout` (lib.sh's T_LONG), each test under a watchdog
# (tests/python/conftest.py); both scale with EMAD_TEST_TIMEOUT_SCALE.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_python.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

EMAD_BIN=${EMAD_BIN:-$top_builddir/emad}

missing=
for mod in numpy torch pytest; do
    timeout "$T" "$PYTHON3" -c "import $mod" >/dev/null 2>&1 || missing="$missing $mod"
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
[ -x "$EMAD_BIN" ] || fail "$EMAD_BIN not built"
client_env
export EMAD_BIN
cd "$top_srcdir"
client_python -m pytest -q -p no:cacheprovider -rs tests/python
