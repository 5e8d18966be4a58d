#!/bin/sh
# bench_ops.sh - does the HTTP endpoint slow pushes? Starts emad (built in
# this tree) with --http on loopback, then measures pushes with the Python
# client (tests/ops_load.py) alone, while 50 slow-loris connections are held
# open, and while THREADS threads GET /metrics as fast as they can.
# Usage: bench/bench_ops.sh [PUSHES] [ELEMENTS] [THREADS]   (defaults 3000 1000 4)
set -eu
cd "$(dirname "$0")/.."
pushes=${1:-3000}
elements=${2:-1000}
threads=${3:-4}
PYTHON3=${PYTHON3:-/usr/bin/python3}
work=$(mktemp -d /tmp/emad-bench-XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
PYTHONPATH=$PWD/client/python EMAD_LIBRARY=$PWD/.libs/libemad.so
export PYTHONPATH EMAD_LIBRARY
port=$("$PYTHON3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./emad --listen "tcp://127.0.0.1:$port" --http 127.0.0.1:0 --log-level info 2>"$work/log" &
pid=$!
sleep 0.5
hport=$(sed -n 's/.*event=http_listening .*port=\([0-9]*\).*/\1/p' "$work/log")
url=tcp://127.0.0.1:$port
./emactl --server "$url" create bench --decay 0.99 >/dev/null
run() {
    "$PYTHON3" tests/ops_load.py pushes "$url" bench "$1" "$pushes" "$elements"
}
run 1 >/dev/null
echo "pushes of $elements float32 + 1 buffer, $pushes per run"
echo "alone:              $(run 100000)"
"$PYTHON3" tests/ops_load.py slowloris 127.0.0.1 "$hport" 50 30 >"$work/loris" &
lp=$!
sleep 1
echo "50 slow-loris:      $(run 200000)"
kill "$lp" 2>/dev/null || true
"$PYTHON3" tests/ops_load.py hammer 127.0.0.1 "$hport" "$threads" 30 >"$work/hammer" &
hp=$!
sleep 1
echo "$threads x /metrics:      $(run 300000)"
kill "$hp" 2>/dev/null || true
echo "alone again:        $(run 400000)"
n=$("$PYTHON3" tests/ops_load.py hammer 127.0.0.1 "$hport" "$threads" 3)
echo "/metrics alone: $n responses in 3 s with $threads threads"
