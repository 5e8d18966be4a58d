#!/bin/sh
# test_layout.sh - the source layout of docs/ARCHITECTURE.md: scripts/layout
# checks file sizes, that includes go down the layers only, that every wire
# string is spelled once, and that libemad.so needs neither jansson nor
# xxhash. Then it checks that the checker itself finds a planted violation
# of each rule (a copy of the tree in the work dir), so it cannot pass by
# reading nothing.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_layout.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

lib=$top_builddir/.libs/libemad.so
[ -f "$lib" ] || fail "$lib not built"
out=$(timeout "$T" "$PYTHON3" "$top_srcdir/scripts/layout" "$top_srcdir" "$lib") ||
    fail "scripts/layout found problems:
$out"

# The checker must see each kind of violation in a copy of the tree.
mkdir "$work/tree"
cp -R "$top_srcdir/src" "$top_srcdir/client" "$work/tree/"
expect_problem() { # WHAT PATTERN
    if out=$(timeout "$T" "$PYTHON3" "$top_srcdir/scripts/layout" "$work/tree"); then
        fail "scripts/layout passed a tree with $1"
    fi
    echo "$out" | grep -q "$2" || fail "scripts/layout did not report $1: $out"
}
printf '#include "daemon/server.h"\n' >>"$work/tree/src/common/dtype.c"
expect_problem "an upward include" 'src/common/dtype.c: #include "daemon/server.h" goes against the layers'
cp "$top_srcdir/src/common/dtype.c" "$work/tree/src/common/dtype.c"
printf 'static const char *k = "tensors";\n' >>"$work/tree/client/lib/push.c"
expect_problem "a second spelling of a wire key" 'wire string "tensors" is a literal in 2 places'
cp "$top_srcdir/client/lib/push.c" "$work/tree/client/lib/push.c"
i=0
while [ $i -lt 1001 ]; do echo "/* line */"; i=$((i + 1)); done >>"$work/tree/src/base/log.c"
expect_problem "a long file" 'src/base/log.c: [0-9]* lines (more than 1000)'
echo "test_layout.sh: ok"
