#!/bin/sh
# test_auth.sh - authentication end to end (docs/SECURITY.md): emad with an
# auth file, driven by tests/auth_e2e.py (an independent client over plain
# sockets and PyNaCl): every op for every role and model pattern (allowed,
# or EMAD_EDENIED with the model unchanged), no credentials, a wrong key, an
# unknown user, a flipped bit in tensor data, replayed and reordered
# frames, an exact resend (the same reply, applied once), ownership of
# transactions and pull sessions, renewal, key rotation and revocation by
# SIGHUP, a reload that fails, /stats behind a bearer token, and the
# emad_auth_failures_total counts. Then session expiry with a one-second
# lifetime, the memory budget's share per user, and the refusal to listen
# beyond loopback without an auth file.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_auth.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

[ -x "$EMAD" ] || fail "$EMAD not built"
timeout "$T" "$PYTHON3" -c 'import nacl.bindings' || fail "$PYTHON3 cannot import nacl (python3-nacl)"

# The HTTP port the daemon logged.
http_port() {
    sed -n 's/.*event=http_listening .*port=\([0-9]*\).*/\1/p' "$work/emad.log" | tail -n 1
}

run_phase() {
    timeout "$T_LONG" env PYTHONPATH="$top_srcdir/tests" "$PYTHON3" \
        "$top_srcdir/tests/auth_e2e.py" "$1" "$port" "$(http_port)" "$work" "$pid" ||
        fail "auth_e2e.py $1"
}

# The daemon starts with an auth file of no users; the script writes the users and reloads.
: >"$work/auth.ini"
chmod 600 "$work/auth.ini"
start_daemon --auth-file "$work/auth.ini" --http 127.0.0.1:0
grep -q "event=auth enabled=yes" "$work/emad.log" || fail "no auth line at start"
run_phase main
grep -q "audit user=a_admin op=configure model=team-a-run result=ok" "$work/emad.log" ||
    fail "no audit line for an admin op"
grep -q "audit user=a_push op=create model=team-a-run-new result=EMAD_EDENIED" "$work/emad.log" ||
    fail "no audit line for a refused admin op"
stop_daemon_clean

: >"$work/auth.ini"
start_daemon --auth-file "$work/auth.ini" --http 127.0.0.1:0 --auth-session-lifetime "$(scaled 2)"
run_phase expiry
stop_daemon_clean

: >"$work/auth.ini"
rm -rf "$work/state"
start_daemon --auth-file "$work/auth.ini" --http 127.0.0.1:0 --max-memory 48M --client-share 50
run_phase share
stop_daemon_clean

# Without an auth file: only loopback and ipc:// unless --insecure, and the start says so.
if timeout "$T" "$EMAD" --listen tcp://0.0.0.0:1 --http off 2>"$work/refused.log"; then
    fail "emad listened on 0.0.0.0 without an auth file"
fi
grep -q "refusing to listen on tcp://0.0.0.0:1 without authentication" "$work/refused.log" ||
    fail "no clear refusal: $(cat "$work/refused.log")"
if timeout "$T" "$EMAD" --listen "tcp://eth0;127.0.0.1:1" --http off 2>"$work/refused.log"; then
    fail "emad listened on an interface without an auth file"
fi
start_daemon
grep -q "event=auth enabled=no" "$work/emad.log" || fail "no auth line at start"
echo "$test_name: ok"
