#!/bin/sh
# test_snapshot.sh - durable state, end to end, with the real emad and emactl:
#  1. round trip: 50 steps, `emactl snapshot`, SIGKILL, restart on the same
#     state dir: the pull is bit-identical at step 50; pushing on continues
#     exactly like a daemon that never restarted (warmup schedule, two
#     decays, BF16 param), compared file for file;
#  2. SIGTERM writes a snapshot of what changed since the last one;
#  3. a flipped byte in the newest snapshot: the daemon starts from the
#     previous one, renames the bad file *.broken and says so;
#  4. the snapshot file loads with a reader written from the spec and with
#     torch (load_state_dict);
#  5. a failed write (file-size limit): error in stats and from emactl,
#     the previous snapshot intact and loaded after a restart;
#  6. --require-snapshot refuses to start on an empty state dir;
#  8. export writes the same format anywhere; import seeds a new model
#     that then continues exactly like the original; a plain safetensors
#     file (a pull) imports too;
#  7. a bounded kill loop: SIGKILL at random moments during pushes and
#     100 ms periodic snapshots; each restart must load exactly one
#     acknowledged step, never a torn model, and leave no temp files.
# Everything runs under timeouts; the daemon is always killed on exit.
set -eu

test_name=test_snapshot.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

CHECK="$top_srcdir/tests/snapshot_check.py"
KILLS=${EMAD_CRASH_KILLS:-12}

py() {
    timeout "$T" "$PYTHON3" "$CHECK" "$@"
}

# push_range MODEL FIRST LAST: push the generated steps FIRST..LAST.
push_range() {
    k=$2
    while [ "$k" -le "$3" ]; do
        ctl push "$1" "$work/in/p_$k.safetensors" --step "$k" \
            --buffers "$work/in/b_$k.safetensors" >"$work/push.out" 2>&1 ||
            fail "push $1 step $k: $(cat "$work/push.out")"
        k=$((k + 1))
    done
}

create_model() {
    ctl create "$1" --decay 0.99,0.9 --schedule warmup --update-after-step 3 >/dev/null ||
        fail "create $1"
}

mkdir "$work/in" "$work/out"
py gen "$work/in" 70 424242 || fail "gen"

# ---- 1. round trip and exact continuation ----------------------------------
start_daemon --snapshot-interval 0
create_model run
create_model ref
push_range run 1 50
push_range ref 1 50
ctl snapshot run >"$work/snap.out" || fail "snapshot: $(cat "$work/snap.out")"
grep -q "durable at step 50" "$work/snap.out" || fail "snapshot said: $(cat "$work/snap.out")"
ctl pull run "$work/out/before.safetensors" --dtype F32 >/dev/null || fail "pull before"
stop_daemon KILL
start_daemon --snapshot-interval 0
ctl pull run "$work/out/after.safetensors" --dtype F32 >/dev/null || fail "pull after restart"
py same "$work/out/before.safetensors" "$work/out/after.safetensors" >/dev/null ||
    fail "the restarted daemon does not return the snapshotted bits"
ctl list run | grep -q "schedule:          warmup" || fail "configuration not restored"
# The model "ref" was never snapshotted explicitly, and the daemon was killed: gone.
if ctl list ref >/dev/null 2>&1; then
    fail "model ref survived a SIGKILL without a snapshot"
fi
# Continue: compare against a fresh daemon that never restarted.
create_model ref
push_range run 51 60
push_range ref 1 60
for d in 0.99 0.9; do
    ctl pull run "$work/out/run_$d.safetensors" --decay "$d" >/dev/null || fail "pull run $d"
    ctl pull ref "$work/out/ref_$d.safetensors" --decay "$d" >/dev/null || fail "pull ref $d"
    py same "$work/out/run_$d.safetensors" "$work/out/ref_$d.safetensors" >/dev/null ||
        fail "after the restart the EMA (decay $d) differs from a daemon that never restarted"
done

# ---- 2. SIGTERM writes what changed ------------------------------------------
ctl pull run "$work/out/term_before.safetensors" >/dev/null || fail "pull before SIGTERM"
stop_daemon TERM
grep -q "event=snapshot_written model=run step=60" "$work/emad.log" ||
    fail "SIGTERM did not write a snapshot of run at step 60"
start_daemon --snapshot-interval 0
ctl pull run "$work/out/term_after.safetensors" >/dev/null || fail "pull after SIGTERM restart"
py same "$work/out/term_before.safetensors" "$work/out/term_after.safetensors" >/dev/null ||
    fail "state after a SIGTERM restart differs"

# ---- 4. the snapshot file is a plain safetensors state dict --------------------
newest=$(ls "$work/state/snapshots/run/"*.d0.safetensors | sort | tail -n 1)
ctl pull run "$work/out/full.safetensors" --dtype F32 >/dev/null || fail "pull full"
py torch "$newest" "$work/out/full.safetensors" >"$work/torch.out" 2>&1 ||
    fail "snapshot file: $(cat "$work/torch.out")"

# ---- 8. export and import ---------------------------------------------------------
ctl export run "$work/out/export.safetensors" --decay 0.9 >"$work/export.out" ||
    fail "export: $(cat "$work/export.out")"
ctl pull run "$work/out/full09.safetensors" --decay 0.9 --dtype F32 >/dev/null || fail "pull 0.9"
py torch "$work/out/export.safetensors" "$work/out/full09.safetensors" >"$work/torch.out" 2>&1 ||
    fail "exported file: $(cat "$work/torch.out")"
ctl export run "$work/out/export0.safetensors" >/dev/null || fail "export decay 0.99"
ctl import copy "$work/out/export0.safetensors" >"$work/import.out" ||
    fail "import: $(cat "$work/import.out")"
grep -q "at step 60" "$work/import.out" || fail "import said: $(cat "$work/import.out")"
ctl list copy | grep -q "schedule:          warmup" || fail "import did not take the configuration"
ctl pull copy "$work/out/copy_seed.safetensors" --dtype F32 >/dev/null || fail "pull copy"
py same "$work/out/full.safetensors" "$work/out/copy_seed.safetensors" >/dev/null ||
    fail "the imported shadows differ from the exported ones"
push_range run 61 70
push_range copy 61 70
ctl pull run "$work/out/run70.safetensors" --dtype F32 >/dev/null || fail "pull run 70"
ctl pull copy "$work/out/copy70.safetensors" --dtype F32 >/dev/null || fail "pull copy 70"
py same "$work/out/run70.safetensors" "$work/out/copy70.safetensors" >/dev/null ||
    fail "an imported model does not continue exactly like the original"
ctl pull run "$work/out/plain.safetensors" >/dev/null || fail "pull plain"
ctl create plain --decay 0.5 >/dev/null || fail "create plain"
ctl import plain "$work/out/plain.safetensors" >/dev/null || fail "import of a plain file"
ctl pull plain "$work/out/plain2.safetensors" >/dev/null || fail "pull plain2"
py same "$work/out/plain.safetensors" "$work/out/plain2.safetensors" >/dev/null ||
    fail "a plain file does not import exactly"
if ctl import nosuch "$work/out/plain.safetensors" >"$work/imp.out" 2>&1; then
    fail "a plain import into a missing model succeeded"
fi
grep -q "EMAD_ENOMODEL" "$work/imp.out" || fail "import said: $(cat "$work/imp.out")"
ctl drop copy >/dev/null && ctl drop plain >/dev/null || fail "drop"
[ ! -d "$work/state/snapshots/copy" ] || fail "drop left the snapshots of copy"
ctl snapshot >/dev/null || fail "snapshot of every model"
newest=$(ls "$work/state/snapshots/run/"*.d0.safetensors | sort | tail -n 1)

# ---- 3. a flipped byte: fall back to the previous snapshot ---------------------
ls "$work/state/snapshots/run/"*.d0.safetensors | sort >"$work/files"
[ "$(wc -l <"$work/files")" -ge 2 ] || fail "expected two kept snapshots, got: $(cat "$work/files")"
stop_daemon KILL
py flip "$newest" || fail "flip"
start_daemon --snapshot-interval 0
grep -q "event=snapshot_broken model=run" "$work/emad.log" || fail "no snapshot_broken in the log"
[ -f "$newest.broken" ] || fail "$newest was not renamed .broken"
ctl pull run "$work/out/fallback.safetensors" --dtype F32 >/dev/null || fail "pull after fallback"
[ "$(py step "$work/out/fallback.safetensors")" = 60 ] ||
    fail "expected the previous snapshot (step 60) after the fallback"
py same "$work/out/full.safetensors" "$work/out/fallback.safetensors" >/dev/null ||
    fail "the fallback state is not the step-60 snapshot"
ctl stats | grep -q "^snapshots_broken 1$" || fail "stats do not count the broken file"

# ---- 5. a failed write keeps the previous snapshot ----------------------------
stop_daemon KILL
EMAD_FSIZE_KB=64 # 64 KiB: the small model fits, the big one does not
start_daemon --snapshot-interval 0
EMAD_FSIZE_KB=
ctl create big --decay 0.5 >/dev/null || fail "create big"
py crashgen "$work/in" 1 || fail "crashgen"
ctl push big "$work/in/c_1.safetensors" --step 1 >/dev/null || fail "push big 1"
ctl snapshot big >/dev/null || fail "small snapshot under the limit"
timeout "$T" "$PYTHON3" -c "
import sys; sys.path.insert(0, '$top_srcdir/tests')
import numpy as np, safetensors_np as st
st.save('$work/in/huge.safetensors', {'a': np.full(1000, 2, np.float32), 'b': np.full(257, 2, np.float32), 'h': np.ones(100000, np.float32)}, {})
" || fail "huge gen"
ctl push big "$work/in/huge.safetensors" --step 2 >/dev/null || fail "push big 2"
if ctl snapshot big >"$work/snapfail.out" 2>&1; then
    fail "a snapshot past the file-size limit succeeded"
fi
grep -q "EMAD_ESNAPSHOT" "$work/snapfail.out" || fail "emactl said: $(cat "$work/snapfail.out")"
ctl stats | grep -q "^snapshot_failures [1-9]" || fail "stats do not count the failure"
ls -a "$work/state/snapshots/big" | grep -q "tmp" && fail "a temp file was left behind"
stop_daemon KILL
start_daemon --snapshot-interval 0
ctl list big | grep -q "step 1," || fail "the previous snapshot of big (step 1) was not loaded"

# ---- 6. --require-snapshot -----------------------------------------------------
stop_daemon KILL
mkdir "$work/empty"
if timeout "$T" "$EMAD" --listen "tcp://127.0.0.1:1" --state-dir "$work/empty" --require-snapshot \
    2>"$work/require.log"; then
    fail "--require-snapshot started on an empty state dir"
fi
grep -q "require-snapshot" "$work/require.log" || fail "no reason given: $(cat "$work/require.log")"

# ---- 7. kill loop ------------------------------------------------------------------
rm -rf "$work/state"
py crashgen "$work/in" 400 || fail "crashgen"
start_daemon --snapshot-interval 0.1
ctl create crash --decay 0.5 >/dev/null || fail "create crash"
next=1
kills=0
low=0
while [ "$kills" -lt "$KILLS" ]; do
    # Push a random number of steps, asking for a snapshot now and then, then kill.
    n=$(( ($(od -An -N1 -tu1 /dev/urandom) % 12) + 1 ))
    end=$((next + n - 1))
    [ "$end" -le 400 ] || break
    while [ "$next" -le "$end" ]; do
        ctl push crash "$work/in/c_$next.safetensors" --step "$next" >/dev/null ||
            fail "crash push $next"
        acked=$next
        if [ $((next % 7)) -eq 0 ]; then
            ctl snapshot crash >"$work/s.out" || fail "snapshot $next: $(cat "$work/s.out")"
            low=$next
        fi
        next=$((next + 1))
    done
    sleep "0.0$(od -An -N1 -tu1 /dev/urandom | tr -d ' ' | cut -c1)"
    stop_daemon KILL
    kills=$((kills + 1))
    # Temp files a killed write left behind must be gone once the daemon is back
    # (a new periodic write may have its own temp file meanwhile: only old names count).
    ls -a "$work/state/snapshots/crash" 2>/dev/null | grep "tmp" >"$work/temps" || true
    start_daemon --snapshot-interval 0.1
    if ctl pull crash "$work/out/crash.safetensors" >/dev/null 2>&1; then
        py crashcheck "$work/out/crash.safetensors" 0.5 "$low" "$acked" >/dev/null ||
            fail "kill $kills: $(py crashcheck "$work/out/crash.safetensors" 0.5 "$low" "$acked" 2>&1)"
        next=$(($(py step "$work/out/crash.safetensors") + 1))
        low=$((next - 1))
    else
        [ "$low" -eq 0 ] || fail "kill $kills: model lost although a snapshot at $low was acknowledged"
        ctl create crash --decay 0.5 >/dev/null || fail "re-create crash"
        next=1
    fi
    while read -r t; do
        [ ! -e "$work/state/snapshots/crash/$t" ] || fail "kill $kills: temp file $t left behind"
    done <"$work/temps"
done
[ "$kills" -ge 3 ] || fail "only $kills kills ran"
echo "test_snapshot.sh: ok ($kills kills)"
