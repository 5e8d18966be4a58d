#!/bin/sh
# test_ops.sh - the operators' side of emad, end to end against the real
# binaries: /metrics during a push load passes `promtool check metrics`
# (when promtool is installed) and its counters equal the pushes and
# rejections sent; /stats (JSON) agrees; /healthz; a configuration file
# with a typo or a bad value is refused with its line number; flags
# override the file and --print-config reads back; SIGHUP applies
# log-level, snapshot-interval and txn-timeout and reports what needs a
# restart; a broken file on reload changes nothing; logs lose their
# timestamps under systemd's journal; sd_notify READY/WATCHDOG/RELOADING/STOPPING
# reach $NOTIFY_SOCKET; and 50 slow-loris HTTP connections
# do not slow pushes (median push latency within 1.5x of the baseline);
# back-to-back pushes stop faulting memory in once the heap has reached
# its high-water mark (at most two pushes after the first two); and
# nanomsg's I/O thread, and only it, is held on its CPU (--io-cpu) while
# large pushes arrive, and without sched_setaffinity (seccomp) auto serves
# with nothing held; --idle-release sets when the spare shadows are freed.
#
# Every command runs under a timeout and the daemon is always killed on exit.
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3, PROMTOOL.
set -eu

test_name=test_ops.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"
client_env
PROMTOOL=${PROMTOOL:-$(command -v promtool || true)}
load() {
    client_python "$top_srcdir/tests/ops_load.py" "$@"
}

# The HTTP port the daemon logged (it listens on port 0: a free one); waits up to T seconds.
http_port() {
    end=$(($(date +%s) + T))
    while [ "$(date +%s)" -le "$end" ]; do
        p=$(sed -n 's/.*event=http_listening .*port=\([0-9]*\).*/\1/p' "$work/emad.log" | tail -n 1)
        if [ -n "$p" ]; then
            echo "$p"
            return 0
        fi
        sleep 0.05
    done
    fail "emad did not log event=http_listening"
}

# Start emad with only --listen, --state-dir and --config $conf (so the file's log-level is in
# force), with lib.sh's watchdog; waits until it serves HTTP. Sets pid, port, url, hport.
start_ops_daemon() {
    port=$(pick_port) || exit 1
    url=tcp://127.0.0.1:$port
    mkdir -p "$work/state"
    : >"$work/emad.log"
    "$EMAD" --listen "$url" --state-dir "$work/state" --config "$conf" 2>>"$work/emad.log" &
    pid=$!
    watchdog "$pid"
    hport=$(http_port)
    wait_log 'event=started'
}

# GET a path of the daemon's HTTP endpoint into $work/body; prints the status code.
get() {
    curl -s -m "$T" -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$hport$1" ||
        fail "curl $1 failed"
}

# Fetch /metrics and check it with promtool (if installed).
scrape() {
    code=$(get /metrics)
    [ "$code" = 200 ] || fail "/metrics answered $code"
    cp "$work/body" "$work/metrics"
    if [ -n "$PROMTOOL" ]; then
        timeout "$T" "$PROMTOOL" check metrics <"$work/metrics" >"$work/promtool" 2>&1 ||
            fail "promtool check metrics: $(cat "$work/promtool")"
    fi
}

# Assert that the last scrape has the sample line "$1 $2".
sample() {
    grep -qxF -- "$1 $2" "$work/metrics" ||
        fail "/metrics: expected '$1 $2', got: $(grep -F -- "${1%%\{*}" "$work/metrics" | grep -v '^#' | head -n 40)"
}

# Wait (up to T seconds) for the daemon's log to contain the fixed string $1.
wait_log() {
    end=$(($(date +%s) + T))
    while ! grep -qF -- "$1" "$work/emad.log"; do
        [ "$(date +%s)" -le "$end" ] || fail "the log lacks '$1'"
        sleep 0.05
    done
}

# Push files made with numpy: $1 path, $2 Python dict expression (numpy as np).
np_save() {
    timeout "$T" "$PYTHON3" -c "
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np as st
st.save(sys.argv[2], $2, {'format': 'pt'})
" "$top_srcdir/tests" "$1" || fail "cannot write $1 with numpy"
}

# ---------------------------------------------------------------------------
# 1. Configuration files: typos and bad values are refused with the line.
conf=$work/emad.conf
printf 'log-level = info\n# a comment\nsnapshot_intervl = 5\n' >"$conf"
if timeout "$T" "$EMAD" --config "$conf" >"$work/out" 2>"$work/err"; then
    fail "a config with a typo'd key was accepted"
fi
grep -qF "$conf:3: unknown key 'snapshot_intervl' (did you mean 'snapshot-interval'?)" "$work/err" ||
    fail "typo error lacks file, line or key: $(cat "$work/err")"
printf 'log-level = info\nsnapshot-keep = many\n' >"$conf"
set +e
timeout "$T" "$EMAD" --config "$conf" >"$work/out" 2>"$work/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "a bad value exits $rc, expected 2"
grep -qF "$conf:2: snapshot-keep = 'many': expected a whole number from 1 to 1000" "$work/err" ||
    fail "bad value error lacks file, line or key: $(cat "$work/err")"

# Flags override the file; --print-config prints what a file reads back.
printf 'listen = tcp://127.0.0.1:1\nsnapshot-keep = 4\nlog-level = warn\nhttp = off\n' >"$conf"
timeout "$T" "$EMAD" --config "$conf" --log-level debug --print-config >"$work/printed" ||
    fail "--print-config failed"
grep -qx 'log-level = debug' "$work/printed" || fail "flag did not override: $(cat "$work/printed")"
grep -qx 'snapshot-keep = 4' "$work/printed" || fail "file value lost: $(cat "$work/printed")"
grep -qx 'http = off' "$work/printed" || fail "http not off: $(cat "$work/printed")"
timeout "$T" "$EMAD" --config "$work/printed" --print-config >"$work/printed2" ||
    fail "the printed configuration is refused"
cmp -s "$work/printed" "$work/printed2" || fail "--print-config does not read back the same"

# ---------------------------------------------------------------------------
# 2. A daemon with a config file and an HTTP port; pushes and rejections.
cat >"$conf" <<EOF
# test configuration
log-level = info
snapshot-interval = 60
txn-timeout = 60
http = 127.0.0.1:0
EOF
start_ops_daemon
code=$(get /healthz)
if [ "$code" != 200 ] || [ "$(cat "$work/body")" != serving ]; then
    fail "/healthz: $code $(cat "$work/body")"
fi

p1=$work/p1.safetensors
np_save "$p1" "{'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': np.ones(2, np.float32)}"
np_save "$work/shape.safetensors" "{'w': np.zeros((3, 2), np.float32), 'b': np.ones(2, np.float32)}"
np_save "$work/nan.safetensors" "{'w': np.full((2, 3), np.nan, np.float32), 'b': np.ones(2, np.float32)}"
ctl create ops --decay 0.9 >/dev/null || fail "create failed"
ctl push ops "$p1" --step 1 >/dev/null || fail "push step 1 failed"
ctl push ops "$p1" --step 1 >/dev/null || fail "stale push failed"          # stale: accepted
if ctl push ops "$work/shape.safetensors" --step 2 2>/dev/null; then fail "shape change accepted"; fi
if ctl push ops "$work/nan.safetensors" --step 3 2>/dev/null; then fail "NaN push accepted"; fi
load rawpush 127.0.0.1 "$port" ops >/dev/null || fail "raw bad pushes were not refused as expected"

scrape
sample 'emad_requests_total{op="push",result="ok"}' 2
sample 'emad_requests_total{op="push",result="error"}' 4
sample 'emad_requests_total{op="invalid",result="error"}' 1
sample 'emad_requests_total{op="create",result="ok"}' 1
sample 'emad_pushes_rejected_total{reason="stale"}' 1
sample 'emad_pushes_rejected_total{reason="shape"}' 1
sample 'emad_pushes_rejected_total{reason="nonfinite"}' 1
sample 'emad_pushes_rejected_total{reason="size"}' 1
sample 'emad_pushes_rejected_total{reason="dtype"}' 1
sample 'emad_pushes_rejected_total{reason="malformed"}' 0
sample 'emad_request_errors_total{code="EMAD_EMALFORMED"}' 1
sample 'emad_tensor_updates_total{result="applied"}' 2
sample 'emad_tensor_updates_total{result="stale"}' 2
sample 'emad_models' 1
sample 'emad_tensors' 2
sample 'emad_shadow_bytes' 32
sample 'emad_model_step{model="ops"}' 1
sample 'emad_model_tensors{model="ops"}' 2
sample 'emad_push_apply_duration_seconds_count' 2
sample 'emad_state{state="serving"}' 1
grep -q '^emad_model_seconds_since_push{model="ops"} [0-9]' "$work/metrics" ||
    fail "no seconds since push for model ops"
grep -q '^process_resident_memory_bytes [1-9]' "$work/metrics" || fail "no resident memory"

# A push load (2 x 2000 steps from two clients) while /metrics is scraped and checked.
ctl create load --decay 0.99 >/dev/null || fail "create load failed"
load pushes "$url" load 1 2000 1000 >"$work/load1" &
l1=$!
load pushes "$url" load 10001 2000 1000 >"$work/load2" &
l2=$!
n=0
while kill -0 "$l1" 2>/dev/null || kill -0 "$l2" 2>/dev/null; do
    scrape
    n=$((n + 1))
done
wait "$l1" || fail "push load 1 failed"
wait "$l2" || fail "push load 2 failed"
echo "$test_name: scraped /metrics $n times during the push load"
scrape
sample 'emad_requests_total{op="push",result="ok"}' 4002
sample 'emad_model_step{model="load"}' 12000
sample 'emad_push_apply_duration_seconds_count' 4002
# Every step of the first client is older than the second's: applied or stale, 2 tensors each.
applied=$(sed -n 's/^emad_tensor_updates_total{result="applied"} //p' "$work/metrics")
stale=$(sed -n 's/^emad_tensor_updates_total{result="stale"} //p' "$work/metrics")
[ $((applied + stale)) -eq $((4 + 8000)) ] ||
    fail "applied $applied + stale $stale != 8004 tensors pushed"

# /stats: the same figures as JSON, per model.
code=$(get /stats)
[ "$code" = 200 ] || fail "/stats answered $code"
timeout "$T" "$PYTHON3" - "$work/body" <<'EOF' || fail "/stats does not match"
import json, sys
s = json.load(open(sys.argv[1]))
c, models = s["counters"], {m["name"]: m for m in s["models"]}
assert s["state"] == "serving", s["state"]
assert c["requests_push"] == 4006, c["requests_push"]
assert c["pushes_rejected"] == 4, c
assert c["pushes_rejected_shape"] == 1 and c["pushes_rejected_nonfinite"] == 1, c
assert models["ops"]["step"] == 1 and models["ops"]["tensors"] == 2, models["ops"]
assert models["load"]["step"] == 12000, models["load"]
assert models["load"]["seconds_since_push"] is not None
assert s["latency"]["push_apply"]["count"] == 4002, s["latency"]
EOF
[ "$(get /nope)" = 404 ] || fail "/nope is not 404"
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$hport/metrics")" = 405 ] ||
    fail "POST /metrics is not 405"

# ---------------------------------------------------------------------------
# 3. SIGHUP: live settings apply, the others are reported; a bad file changes nothing.
cat >"$conf" <<EOF
log-level = debug
snapshot-interval = 0.3
txn-timeout = 30
http = 127.0.0.1:0
max-message-bytes = 1M
EOF
kill -HUP "$pid"
wait_log 'event=config_changed key=log-level old="info" new="debug"'
wait_log 'event=config_changed key=snapshot-interval old="60" new="0.3"'
wait_log 'event=config_changed key=txn-timeout old="60" new="30"'
wait_log 'event=config_not_applied key=max-message-bytes old="64M" new="1M" reason="needs a restart"'
# The new interval is in force: a changed model is snapshotted within a second or two.
ctl push ops "$p1" --step 5 >/dev/null || fail "push step 5 failed"
wait_log 'event=snapshot_written model=ops step=5'
kill -0 "$pid" || fail "emad died on SIGHUP"
printf 'log-level = info\nsnapshot-interval = 0.3\nbogus-key = 1\n' >"$conf"
kill -HUP "$pid"
wait_log "event=reload_failed config=$conf error=\"$conf:3: unknown key 'bogus-key'"
ctl push ops "$p1" --step 6 >/dev/null || fail "push step 6 failed"
wait_log 'event=push model=ops step=6' # still at debug level: nothing changed
stop_daemon TERM

# ---------------------------------------------------------------------------
# 4. Under systemd's journal (JOURNAL_STREAM names stderr), no timestamps.
: >"$work/journal.log"
js=$(stat -c '%d:%i' "$work/journal.log")
# Each run: emad in the background, SIGTERM once it has logged event=started, then its status.
# (Expanded by the sh -c; the log it waits on is the one its stderr goes to.)
# shellcheck disable=SC2016
journal_run='"$1" --listen "ipc://$2/j.sock" --http off & p=$!
    until grep -q "event=started" "$3"; do sleep 0.05; done; kill -TERM $p; wait $p'
# shellcheck disable=SC2094
JOURNAL_STREAM=$js timeout "$T" sh -c "$journal_run" sh "$EMAD" "$work" "$work/journal.log" \
    2>>"$work/journal.log" || fail "emad under journal failed"
grep -q '^<6>info event=started ' "$work/journal.log" ||
    fail "journal log lines are not '<6>info event=...': $(head -n 5 "$work/journal.log")"
if grep -q '^20[0-9][0-9]-' "$work/journal.log"; then fail "timestamps under the journal"; fi
# shellcheck disable=SC2094
JOURNAL_STREAM=1:1 timeout "$T" sh -c "$journal_run" sh "$EMAD" "$work" "$work/plain.log" \
    2>"$work/plain.log" || fail "emad failed"
grep -q '^20[0-9][0-9]-[0-9-]*T[0-9:.]*Z info event=started ' "$work/plain.log" ||
    fail "a JOURNAL_STREAM that is not stderr dropped the timestamps: $(head -n 3 "$work/plain.log")"

# ---------------------------------------------------------------------------
# 5. systemd's notify protocol: READY=1 once serving, WATCHDOG=1 at a quarter of
# WATCHDOG_USEC while the loop turns, RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on
# SIGTERM.
printf 'http = off\nlog-level = info\n' >"$conf"
timeout "$T" "$PYTHON3" - "$EMAD" "$work" "$conf" <<'EOF' || fail "sd_notify protocol"
import os, signal, socket, subprocess, sys, time
emad, work, conf = sys.argv[1:4]
path = os.path.join(work, "notify.sock")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="200000")
env.pop("WATCHDOG_PID", None)
SCALE = float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)
log = open(os.path.join(work, "notify-emad.log"), "w")
p = subprocess.Popen([emad, "--listen", "ipc://" + os.path.join(work, "n.sock"), "--config", conf,
                      "--state-dir", os.path.join(work, "nstate")], env=env, stderr=log)


def until(field, timeout=60.0 * SCALE):
    """Messages received until one has the line `field`; fails after timeout seconds."""
    got, end = [], time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            p.kill()
            sys.exit("no %s within %.0f s; got %r" % (field, timeout, got))
        got.append(msg)
        if field in msg.split("\n"):
            return got


first = until("READY=1")
assert "STATUS=serving on ipc://" in first[-1], first
assert "WATCHDOG=1" not in "".join(first), "watchdog pings before READY: %r" % first
# Pings every 50 ms (a quarter of WATCHDOG_USEC): ten more come, and not sooner than nine
# intervals allow (a busy machine may delay them, never hasten them).
sock.settimeout(60.0 * SCALE)
t0 = time.monotonic()
pings = 0
while pings < 10:
    pings += sock.recv(4096) == b"WATCHDOG=1"
took = time.monotonic() - t0
assert took >= 0.4, "10 watchdog pings in %.3f s at WATCHDOG_USEC=200000" % took
pings = round(pings / took)
p.send_signal(signal.SIGHUP)
got = until("RELOADING=1")
assert any(line.startswith("MONOTONIC_USEC=") for line in got[-1].split("\n")), got
until("READY=1")
p.send_signal(signal.SIGTERM)
until("STOPPING=1")
assert p.wait(60 * SCALE) == 0, "emad exited %d" % p.returncode
print("test_ops.sh: sd_notify READY, %d watchdog pings/s, RELOADING/READY, STOPPING" % pings)
EOF

# ---------------------------------------------------------------------------
# 6. 50 slow-loris HTTP connections do not slow pushes.
printf 'http = 127.0.0.1:0\nlog-level = info\n' >"$conf"
start_ops_daemon
ctl create bench --decay 0.99 >/dev/null || fail "create bench failed"
load pushes "$url" bench 1 300 1000 >/dev/null || fail "warm-up pushes failed"
# A timing comparison: other tests running in parallel can disturb one attempt; three tries.
attempt=1
while :; do
    first=$((attempt * 10000))
    load pushes "$url" bench "$first" 1500 1000 >"$work/base" || fail "baseline pushes failed"
    rm -f "$work/loris_ready"
    load slowloris 127.0.0.1 "$hport" 50 8 "$work/loris_ready" >"$work/loris" &
    lp=$!
    end=$(($(date +%s) + T)) # until the 50 connections are open
    while [ ! -e "$work/loris_ready" ]; do
        kill -0 "$lp" 2>/dev/null || fail "the slow-loris client stopped before it was ready"
        [ "$(date +%s)" -le "$end" ] || fail "the slow-loris connections did not open"
        sleep 0.05
    done
    load pushes "$url" bench $((first + 5000)) 1500 1000 >"$work/loris_push" ||
        fail "pushes under slow-loris failed"
    code=$(get /healthz)
    [ "$code" = 200 ] || fail "/healthz answered $code during the slow-loris"
    wait "$lp" || fail "slow-loris client failed"
    if timeout "$T" "$PYTHON3" - "$work/base" "$work/loris_push" "$work/loris" <<'EOF'; then
import json, sys
base, loris = (json.load(open(p)) for p in sys.argv[1:3])
held = int(open(sys.argv[3]).read())
print("test_ops.sh: push median %.3f ms alone, %.3f ms with %d slow-loris connections held" %
      (base["median_ms"], loris["median_ms"], held))
assert held >= 45, "only %d slow-loris connections were held open" % held
assert loris["median_ms"] <= base["median_ms"] * 1.5 + 0.05, (base, loris)
EOF
        break
    fi
    [ $attempt -lt 3 ] || fail "slow-loris slowed pushes in 3 attempts"
    attempt=$((attempt + 1))
done
stop_daemon TERM

# Back-to-back pushes of a chunked model reuse the daemon's request buffers
# and spare shadows. The first push creates the shadows, the second the
# spares; later a push faults memory in only when more request buffers
# than ever before are alive at once (a new high-water mark of the heap,
# 1,024 pages per 4 MiB buffer), which happens once or twice. When the
# heap was trimmed as buffers were freed, about every other push faulted
# 2,000-9,000 pages.
# (Not under AddressSanitizer, whose allocator keeps freed memory apart.)
if [ -z "$asan_rt" ]; then
    start_ops_daemon
    load faults "$url" heap "$pid" 64 16 >"$work/faults" ||
        fail "pushes for the page-fault count failed"
    timeout "$T" "$PYTHON3" - "$work/faults" <<'EOF' || fail "pushes kept faulting memory in"
import json, sys
faults = json.load(open(sys.argv[1]))["faults"]
print("test_ops.sh: daemon page faults per push of a 64 MiB model: %s" % faults)
assert len(faults) == 16, faults
assert sum(f >= 512 for f in faults[2:]) <= 2, faults
EOF
    kill -0 "$pid" || fail "emad died during the page-fault pushes"
    stop_daemon TERM
fi
# --idle-release: the spare shadows of a 32 MiB model are freed (RSS drops
# by 24 MiB or more) about 0.5 s after the last request with 0.5, and not
# within 2 s with 30. Under AddressSanitizer, whose allocator holds freed
# memory in quarantine, only the release's log line and timing are checked.
# (--idle-release-max 0.5: no longer hold at the pace of the three pushes;
# tests/test_cadence.sh tests that.)
rm -rf "$work/state" # no models from the tests above
: >"$work/emad.log"
start_daemon --idle-release 0.5 --idle-release-max 0.5
release_drop=drop
if [ -n "$asan_rt" ]; then release_drop=any; fi
load release "$url" "$pid" 3 "$release_drop" >"$work/release" ||
    fail "--idle-release 0.5: $(cat "$work/release")"
echo "$test_name: --idle-release 0.5: $(cat "$work/release")"
wait_log "event=idle_release idle_ms=500"
kill -0 "$pid" || fail "emad died after the idle release"
stop_daemon TERM
rm -rf "$work/state"
: >"$work/emad.log"
start_daemon --idle-release 30
load release "$url" "$pid" 2 keep >"$work/release" ||
    fail "--idle-release 30: $(cat "$work/release")"
echo "$test_name: --idle-release 30: $(cat "$work/release")"
# Only after the first request counts: the daemon's idle clock starts at its first request, so
# a start that waits more than a second for one logs an (empty) release before it.
if sed -n '/event=model_created model=rel/,$p' "$work/emad.log" | grep -qF "event=idle_release"; then
    fail "released before 30 s idle"
fi
stop_daemon TERM
rm -rf "$work/state"

# nanomsg's I/O thread held on one CPU while large pushes arrive (--io-cpu).
# Before any push no thread of the daemon is narrowed. After a push of a
# 16 MiB model and a pull (the average checked), exactly one thread runs
# only on the chosen CPU and every other keeps the CPUs the daemon started
# with; 5 s idle later it is released. auto (the default) chooses the
# highest-numbered CPU, and none when only one is allowed (taskset); off
# narrows none. A CPU outside the allowed set stops the start (status 1)
# and a bad value is refused (status 2), each with a message.
cpus=$(timeout "$T" "$PYTHON3" -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')
lo=${cpus%% *}
hi=${cpus##* }
affinity() {
    load affinity "$url" "$pid" "$1" >"$work/affinity" ||
        fail "--io-cpu $2: $(cat "$work/affinity")"
    kill -0 "$pid" || fail "emad died (--io-cpu $2)"
}
threads() {
    load threads "$pid" "$1" >"$work/affinity" || fail "$2: $(cat "$work/affinity")"
}
if [ "$lo" != "$hi" ]; then
    : >"$work/emad.log"
    start_daemon
    grep -qF "event=io_thread tid=" "$work/emad.log" || fail "no event=io_thread logged"
    threads none "a thread narrowed before any push"
    affinity "$hi" auto
    wait_log "event=io_thread_held cpu=$hi"
    wait_log "event=io_thread_released cpu=$hi"
    threads none "not released after 5 s idle"
    stop_daemon TERM
    rm -rf "$work/state" # the next daemon creates the model afresh
    start_daemon --io-cpu "$lo"
    affinity "$lo" "$lo"
    stop_daemon TERM
    rm -rf "$work/state"
else
    echo "$test_name: one CPU allowed ($cpus): auto and an explicit CPU hold nothing to check"
fi
start_daemon --io-cpu off
affinity none off
stop_daemon TERM
rm -rf "$work/state"
printf '#!/bin/sh\nexec taskset -c %s "%s" "$@"\n' "$lo" "$EMAD" >"$work/emad_one_cpu"
chmod +x "$work/emad_one_cpu"
emad_saved=$EMAD
EMAD=$work/emad_one_cpu
start_daemon
affinity none "auto on one CPU"
stop_daemon TERM
rm -rf "$work/state"
EMAD=$emad_saved
# Where sched_setaffinity is denied (a seccomp filter, as under a systemd
# unit that does not allow it): auto logs event=io_thread_free and serves
# with nothing held; an explicit CPU stops the start.
printf '#!/bin/sh\nexec "%s" "%s" deny-setaffinity "%s" "$@"\n' "$PYTHON3" \
    "$top_srcdir/tests/ops_load.py" "$EMAD" >"$work/emad_no_affinity"
chmod +x "$work/emad_no_affinity"
status=0
"$work/emad_no_affinity" --version >/dev/null 2>&1 || status=$?
if [ "$status" = 0 ]; then
    EMAD=$work/emad_no_affinity
    : >"$work/emad.log"
    start_daemon
    wait_log 'event=io_thread_free error="Operation not permitted"'
    affinity none "auto without sched_setaffinity"
    stop_daemon TERM
    rm -rf "$work/state"
    timeout "$T" "$EMAD" --listen "tcp://127.0.0.1:$(pick_port)" --http off --io-cpu "$lo" \
        2>"$work/err" || status=$?
    EMAD=$emad_saved
    [ "$status" = 1 ] || fail "--io-cpu $lo without sched_setaffinity: status $status, expected 1"
    grep -qF "io-cpu $lo: cannot set the CPU affinity: Operation not permitted" "$work/err" ||
        fail "--io-cpu $lo without sched_setaffinity: $(cat "$work/err")"
else
    echo "$test_name: no seccomp filter here (status $status): denied affinity not checked"
fi
status=0
timeout "$T" "$EMAD" --listen "tcp://127.0.0.1:$(pick_port)" --http off --io-cpu 1023 \
    2>"$work/err" || status=$?
[ "$status" = 1 ] || fail "--io-cpu 1023: status $status, expected 1"
grep -qF "io-cpu 1023 is not among the CPUs this process may run on" "$work/err" ||
    fail "--io-cpu 1023: $(cat "$work/err")"
status=0
timeout "$T" "$EMAD" --io-cpu fast 2>"$work/err" || status=$?
[ "$status" = 2 ] || fail "--io-cpu fast: status $status, expected 2"
grep -qF "emad: --io-cpu 'fast': expected auto, off or a CPU number from 0 to 1023" "$work/err" ||
    fail "--io-cpu fast: $(cat "$work/err")"

echo "$test_name: PASS"
