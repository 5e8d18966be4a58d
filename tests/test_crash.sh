#!/bin/sh
# test_crash.sh - durability as a property (tests/crash_prop.py): random accepted states
# (names within the rules, 1-3 decays, copied or averaged buffers, 1-3 writers, steps up to
# 2^63-1, single pushes, transactions, multi-writer parts) pushed to the real emad, explicit
# snapshots now and then, SIGKILL or SIGTERM at a random moment while a second client keeps
# pushing, now and then a model directory swapped for a symbolic link; after each restart
# every model is at its last acknowledged durable step or later (its last acknowledged push
# after SIGTERM with exit status 0), exit status 3 names exactly the broken models, models
# snapshotted and untouched since are pulled bit for bit as before, and nothing next to the
# state directory changed. EMAD_TEST_SEED=N repeats a run (the seed is printed).
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_crash.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

[ -x "$EMAD" ] || fail "$EMAD not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"

seed=${EMAD_TEST_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
mkdir -p "$work/parent"
timeout "$T_LONG" "$PYTHON3" "$top_srcdir/tests/crash_prop.py" "$EMAD" "$work/parent" 16 "$seed" ||
    fail "durability property (seed $seed)"
echo "$test_name: PASS"
