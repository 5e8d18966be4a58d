#!/bin/sh
# test_schedules.sh - acceptance test of the EMA options of issue 3
# (docs/EMA.md): the real emad on a private port and state dir, driven by
# the real emactl, compared with independent Python references
# (tests/schedules_reference.py, tests/schedules_libs.py):
#   1-5  the decay schedules of TensorFlow, torch_ema, timm ModelEmaV3 (warmup
#        and constant), ema-pytorch and diffusers (num_updates and warmup),
#        each mapped to emad options, 200 steps: within 1 ulp of the
#        subtraction-form reference; then the library's own arithmetic
#        (float32 decays, lerp_, diffusers' copy by subtraction) measured;
#   6    torch's AveragedModel (EMA, use_buffers=True) run for real against
#        --buffers average (int64 num_batches_tracked copied, not averaged);
#   7    --step-gap compensate with pushes every 5 and 10 steps == the
#        per-step float64 EMA of the piecewise-constant parameter within
#        1e-6 relative (constant, num_updates and warmup); ignore does not;
#   8    --nonfinite reject (every shadow bit-identical, error names the
#        tensor), skip (only the bad tensors left alone), allow (NaN kept);
#   9    four writers pushing --shard K/4 in changing orders == one writer,
#        bit for bit; pulls before the fourth writer see the previous step;
#   10   BF16 params, decay 0.9999, 1000 steps: F32 shadow == F32 reference;
#   11   two decays and pull --decay/--dtype, --copy/--ignore globs,
#        --buffers average vs copy, configure mid-run;
#   12   bad options and requests refused with the right error, nothing
#        changed, the daemon still serving.
# Torch checks are skipped with a message when torch does not import,
# unless EMAD_REQUIRE_TORCH=1 (then they fail). Every command runs under a
# timeout and the daemon is always killed on exit.
#
# The long runs of plain pushes (about 3,000: the schedules' 200 steps,
# the gaps, the 1,000 BF16 steps, ...) are listed in job files and sent by
# tests/schedules_push.py in one process through the Python client, which
# pushes a file as emactl push does (libemad's emad_push); every push must
# succeed and apply (or ignore, where counted) all its tensors. emactl
# itself still drives every push whose output is checked, the sharded
# writers, creates, configures, pulls, lists, stats and refusals, so the
# test runs about 330 emactl processes instead of 3,300.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_schedules.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

REF=$top_srcdir/tests/schedules_reference.py
in=$work/in
out=$work/in/out

# Run emactl expecting success; stdout in $work/out, stderr in $work/err.
ok() {
    ctl "$@" >"$work/out" 2>"$work/err" </dev/null || fail "emactl $* failed: $(cat "$work/err")"
}

# Run emactl expecting exit status $1 and a message on stderr.
refused() {
    want=$1
    shift
    rc=0
    ctl "$@" >"$work/out" 2>"$work/err" </dev/null || rc=$?
    [ "$rc" -eq "$want" ] || fail "emactl $*: exit $rc, expected $want: $(cat "$work/err")"
    [ -s "$work/err" ] || fail "emactl $* failed without a message on stderr"
}

# Assert that $work/err contains the fixed string $1; $2 says what was run.
err_has() {
    grep -qF -- "$1" "$work/err" || fail "$2: stderr lacks '$1': $(cat "$work/err")"
}

# Assert that $work/out contains the fixed string $1; $2 says what was run.
out_has() {
    grep -qF -- "$1" "$work/out" || fail "$2: output lacks '$1': $(cat "$work/out")"
}

# job MODEL STEP PARAMS [BUFFERS|-] [ignored=N]: add a push to $work/jobs.
job() {
    echo "$*" >>"$work/jobs"
}

# Send the pushes listed by job() (in order, one process) and empty the list.
run_jobs() {
    client_python "$top_srcdir/tests/schedules_push.py" "$url" "$work/jobs" >"$work/out" \
        2>"$work/err" || fail "pushes failed: $(cat "$work/err")"
    : >"$work/jobs"
}

# pull MODEL FILE STEP [ARGS]: pull into $out/FILE and check the step emactl reports.
pull() {
    _m=$1 _f=$2 _s=$3
    shift 3
    ok pull "$_m" "$out/$_f" "$@"
    out_has "pulled $_m step $_s:" "pull $_m $*"
}

[ -x "$EMAD" ] || fail "$EMAD not built"
[ -x "$EMACTL" ] || fail "$EMACTL not built"
timeout "$T" "$PYTHON3" -c 'import numpy' || fail "$PYTHON3 cannot import numpy"
if timeout "$T" "$PYTHON3" -c 'import torch' 2>/dev/null; then
    echo "test_schedules.sh: torch imports: torch references on"
elif [ "${EMAD_REQUIRE_TORCH:-0}" = 1 ]; then
    fail "EMAD_REQUIRE_TORCH=1 but $PYTHON3 cannot import torch"
else
    echo "test_schedules.sh: SKIP torch references: $PYTHON3 cannot import torch"
fi

client_env
: >"$work/jobs"
mkdir "$in"
timeout "$T" "$PYTHON3" "$REF" gen "$in" || fail "schedules_reference.py gen failed"
mkdir "$out"
# shellcheck disable=SC2119
start_daemon

# ---- 1-6: library schedules, 200 steps. The mapping is docs/EMA.md's.
# TensorFlow ExponentialMovingAverage(0.95, num_updates=t), apply at t = 1..200.
ok create tf --schedule num_updates --decay 0.95
# torch_ema(decay=0.9, use_num_updates=True): construction at step 0, update k at k.
ok create tema --schedule num_updates --decay 0.9
# timm ModelEmaV3(0.95, min_decay=0.5, update_after_step=5, use_warmup, gamma 2, power 0.75).
ok create timmw --schedule warmup --decay 0.95 --min-decay 0.5 --update-after-step 5 \
    --inv-gamma 2 --power 0.75
# timm ModelEmaV3(0.95, update_after_step=3) without warmup: uas = 3 + 1.
ok create timmc --decay 0.95 --update-after-step 4
# ema-pytorch EMA(beta=0.97, update_after_step=10, update_every=1, power=0.8, min_value=0.5).
ok create emapt --schedule warmup --decay 0.97 --update-after-step 10 --power 0.8 --min-decay 0.5
# diffusers EMAModel(0.95, min_decay=0.3, update_after_step=2): uas = 2 + 1.
ok create diffn --schedule num_updates --decay 0.95 --min-decay 0.3 --update-after-step 3
# diffusers EMAModel(0.999, update_after_step=2, use_ema_warmup=True), default inv_gamma/power.
ok create diffw --schedule warmup --decay 0.999 --update-after-step 2
# AveragedModel(multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True).
ok create avg --decay 0.9 --buffers average
ok list timmw
out_has "inv_gamma:         2" "list timmw"
out_has "update_after_step: 5" "list timmw"

ok push tema "$in/walk/p_0.safetensors" --step 0
out_has "4 applied" "push tema step 0"
t=1
while [ "$t" -le 200 ]; do
    for m in tf tema timmw timmc emapt diffn diffw; do
        job "$m" "$t" "$in/walk/p_$t.safetensors"
    done
    job avg "$t" "$in/avg/p_$t.safetensors" "$in/avg/b_$t.safetensors"
    t=$((t + 1))
done
run_jobs
for m in tf tema timmw timmc emapt diffn diffw avg; do
    pull "$m" "$m.safetensors" 200
done

# ---- 7: step gaps. "a" every 5 steps, "b" and "c" every 10.
ok create gapc --decay 0.99 --step-gap compensate
ok create gapn --decay 0.99 --step-gap compensate --schedule num_updates --update-after-step 15
ok create gapw --decay 0.99 --step-gap compensate --schedule warmup --update-after-step 3 \
    --power 0.75
ok create gapi --decay 0.99
t=5
while [ "$t" -le 200 ]; do
    for m in gapc gapn gapw gapi; do
        job "$m" "$t" "$in/gap/p_$t.safetensors"
    done
    t=$((t + 5))
done
run_jobs
for m in gapc gapn gapw gapi; do
    pull "$m" "$m.safetensors" 200
done

# ---- 8: non-finite values. attn.mask holds -inf and is copied, so never checked.
ok create nanr --decay 0.9,0.99 --copy 'attn.*'
ok create nans --decay 0.9 --nonfinite skip --step-gap compensate --copy 'attn.*'
ok create nana --decay 0.9 --nonfinite allow --copy 'attn.*'
t=1
while [ "$t" -le 20 ]; do
    for m in nanr nans nana; do
        job "$m" "$t" "$in/nan/p_$t.safetensors"
    done
    t=$((t + 1))
done
run_jobs
pull nanr nanr_before_0.9 20 --decay 0.9
pull nanr nanr_before_0.99 20 --decay 0.99
refused 1 push nanr "$in/nan/bad_21.safetensors" --step 21
err_has "tensor 'fc.weight': 1 NaN or Inf value" "push of a NaN (reject)"
err_has "nothing applied" "push of a NaN (reject)"
err_has "(EMAD_ENONFINITE)" "push of a NaN (reject)"
pull nanr nanr_after_0.9 20 --decay 0.9
pull nanr nanr_after_0.99 20 --decay 0.99
cmp "$out/nanr_before_0.9" "$out/nanr_after_0.9" ||
    fail "a rejected push changed the decay 0.9 shadows"
cmp "$out/nanr_before_0.99" "$out/nanr_after_0.99" ||
    fail "a rejected push changed the decay 0.99 shadows"
ok list nanr
grep -q '^fc.weight  *param  *F32  *\[4, 5\]  *20 ' "$work/out" ||
    fail "after a rejected step 21, list does not show fc.weight at step 20: $(cat "$work/out")"
ok push nans "$in/nan/skip_21.safetensors" --step 21
out_has "2 skipped (NaN/Inf)" "push with NaN and Inf (skip)"
out_has "model step 21" "push with NaN and Inf (skip)"
ok push nana "$in/nan/bad_21.safetensors" --step 21
for t in 21 22; do
    ok push nanr "$in/nan/p_$t.safetensors" --step "$t"
    [ "$t" = 21 ] || ok push nans "$in/nan/p_$t.safetensors" --step "$t"
    [ "$t" = 21 ] || ok push nana "$in/nan/p_$t.safetensors" --step "$t"
done
pull nanr nanr_0.9.safetensors 22 --decay 0.9
pull nanr nanr_0.99.safetensors 22 --decay 0.99
pull nans nans.safetensors 22
pull nana nana.safetensors 22
ok stats
grep -q '^errors_EMAD_ENONFINITE 1$' "$work/out" ||
    fail "stats do not count one EMAD_ENONFINITE: $(grep -i nonfinite "$work/out")"
grep -q '^tensors_skipped_nonfinite 2$' "$work/out" ||
    fail "stats do not count 2 skipped tensors: $(grep -i nonfinite "$work/out")"

# ---- 9: four writers, each pushing --shard K/4 of every tensor, in changing orders.
ok create w4 --decay 0.9,0.99 --buffers average --writers 4
ok create w1 --decay 0.9,0.99 --buffers average
pull w4 w4_post 0

# w4_push STEP K WAITING: push writer K's shard; WAITING=yes if the step must stay pending.
w4_push() {
    ok push w4 "$in/wr/p_$1.safetensors" --step "$1" --buffers "$in/wr/b_$1.safetensors" \
        --shard "$2/4"
    if [ "$3" = yes ]; then
        out_has "waiting for other writers" "push w4 step $1 writer $2"
    else
        out_has "model step $1 " "push w4 step $1 writer $2 (the last)"
    fi
}

# w4_seen STEP: a pull shows STEP and equals the pull made when STEP was committed.
w4_seen() {
    pull w4 w4_pre "$1"
    cmp "$out/w4_pre" "$out/w4_post" || fail "pull of w4 while waiting differs from step $1"
}

t=1
while [ "$t" -le 30 ]; do
    # shellcheck disable=SC2046
    set -- $(sed -n "${t}p" "$in/wr/order")
    [ "$1" = "$t" ] || fail "bad order file line $t"
    if [ "$t" = 10 ]; then
        # Steps 10 and 11 overlap: three writers of 10, two of 11, then the rest.
        # shellcheck disable=SC2046
        set -- $(sed -n "10p;11p" "$in/wr/order")
        w4_push 10 "$2" yes
        w4_seen 9
        w4_push 10 "$3" yes
        w4_push 10 "$4" yes
        w4_push 11 "$7" yes
        w4_push 11 "$8" yes
        w4_seen 9
        w4_push 10 "$5" no
        pull w4 w4_post 10
        w4_push 11 "$9" yes
        w4_seen 10
        w4_push 11 "${10}" no
        pull w4 w4_post 11
    elif [ "$t" != 11 ]; then
        w4_push "$t" "$2" yes
        w4_push "$t" "$3" yes
        w4_seen $((t - 1))
        w4_push "$t" "$4" yes
        w4_seen $((t - 1))
        w4_push "$t" "$5" no
        pull w4 w4_post "$t"
    fi
    job w1 "$t" "$in/wr/p_$t.safetensors" "$in/wr/b_$t.safetensors"
    t=$((t + 1))
done
run_jobs
for d in 0.9 0.99; do
    pull w4 "w4_$d.safetensors" 30 --decay "$d"
    pull w1 "w1_$d.safetensors" 30 --decay "$d"
done
# A resend of a committed step is stale, and changes nothing.
ok push w4 "$in/wr/p_30.safetensors" --step 30 --buffers "$in/wr/b_30.safetensors" --shard 2/4
pull w4 w4_again 30 --decay 0.9
cmp "$out/w4_0.9.safetensors" "$out/w4_again" || fail "a resent shard changed w4"

# ---- 10: BF16 params, decay 0.9999, 1000 steps.
ok create bf --decay 0.9999
t=1
while [ "$t" -le 1000 ]; do
    job bf "$t" "$in/bf/p_$t.safetensors"
    t=$((t + 1))
done
run_jobs
pull bf bf_f32.safetensors 1000 --dtype F32
pull bf bf.safetensors 1000

# ---- 11: two decays, conversions, name rules, buffer policies.
ok create md --decay 0.9,0.99 --copy 'emb.*' --ignore 'aux.*' --ignore '*.tmp' --buffers average
ok create mdc --decay 0.9,0.99 --copy 'emb.*' --ignore 'aux.*' --ignore '*.tmp'
t=1
while [ "$t" -le 49 ]; do
    for m in md mdc; do
        job "$m" "$t" "$in/md/p_$t.safetensors" "$in/md/b_$t.safetensors" ignored=2
    done
    t=$((t + 1))
done
run_jobs
for m in md mdc; do # the last step through emactl: its report shows the count too
    ok push "$m" "$in/md/p_50.safetensors" --step 50 --buffers "$in/md/b_50.safetensors"
    out_has "2 ignored" "push $m step 50"
done
pull md md_a.safetensors 50 --decay 0.9
pull md md_b.safetensors 50 --decay 0.99
pull md md_def.safetensors 50
pull md md_b_bf16.safetensors 50 --decay 0.99 --dtype BF16
pull md md_b_f16.safetensors 50 --decay 0.99 --dtype F16
pull md md_b_f32.safetensors 50 --decay 0.99 --dtype F32
pull md md_a_f32.safetensors 50 --decay 0.9 --dtype F32
pull mdc md_c.safetensors 50

# configure: 0.9 up to step 30, 0.99 up to 60, then warmup (uas 50, power 1).
ok create cf --decay 0.9
t=1
while [ "$t" -le 90 ]; do
    if [ "$t" = 31 ] || [ "$t" = 61 ]; then
        run_jobs # the steps before a configure are in
    fi
    if [ "$t" = 31 ]; then
        pull cf cf_30a 30
        ok configure cf --decay 0.99
        pull cf cf_30b 30
        cmp "$out/cf_30a" "$out/cf_30b" || fail "configure changed the shadows"
        ok list cf
        out_has "decays:            0.99" "list cf after configure"
    elif [ "$t" = 61 ]; then
        ok configure cf --schedule warmup --update-after-step 50 --power 1
        ok configure cf
        out_has "schedule:          warmup" "configure cf (show)"
        out_has "update_after_step: 50" "configure cf (show)"
    fi
    job cf "$t" "$in/cf/p_$t.safetensors"
    t=$((t + 1))
done
run_jobs
pull cf cf.safetensors 90

# ---- 12: bad options and requests; nothing changes, the daemon keeps serving.
refused 2 create bad1 --schedule exponential
err_has "--schedule must be constant, num_updates or warmup" "create --schedule exponential"
refused 2 create bad2 --decay 1.5
err_has "--decay needs" "create --decay 1.5"
refused 2 create bad3 --writers 0
err_has "--writers needs" "create --writers 0"
refused 1 create bad4 --decay 0.9,0.9
err_has "(EMAD_ERANGE)" "create --decay 0.9,0.9"
refused 1 pull cf "$out/x" --decay 0.5
err_has "has no decay 0.5" "pull --decay 0.5"
err_has "(EMAD_ERANGE)" "pull --decay 0.5"
refused 2 pull cf "$out/x" --dtype I32
err_has "--dtype must be F32, BF16 or F16" "pull --dtype I32"
refused 2 push w4 "$in/wr/p_30.safetensors" --step 31 --shard 4/4
err_has "--shard needs K/N" "push --shard 4/4"
refused 1 configure w4 --writers 2
err_has "(EMAD_EIMMUTABLE)" "configure --writers"
refused 1 configure md --decay 0.5
err_has "(EMAD_EIMMUTABLE)" "configure with another number of decays"
refused 1 create md --decay 0.5
err_has "(EMAD_EEXIST)" "create of an existing model with another configuration"
ok create md --decay 0.9,0.99 --copy 'emb.*' --ignore 'aux.*' --ignore '*.tmp' \
    --buffers average --exist-ok
refused 1 pull nosuch "$out/x"
err_has "(EMAD_ENOMODEL)" "pull of a missing model"
# A shard of a model without --writers: refused, nothing applied.
refused 1 push cf "$in/cf/p_90.safetensors" --step 91 --shard 1/4
err_has "model cf has 1 writer, not 4" "push --shard 1/4 to a model with one writer"
refused 1 push cf "$in/cf/p_90.safetensors" --step 91 --shard 0/4
err_has "model cf has 1 writer, not 4" "push --shard 0/4 to a model with one writer"
pull cf cf_after_bad 90
cmp "$out/cf.safetensors" "$out/cf_after_bad" || fail "refused requests changed cf"
pull w4 w4_after_bad 30 --decay 0.9
cmp "$out/w4_0.9.safetensors" "$out/w4_after_bad" || fail "refused requests changed w4"
ok list
for m in bad1 bad2 bad3 bad4; do
    if grep -q "^$m " "$work/out"; then fail "refused create left model $m"; fi
done

# ---- every pull against the references.
timeout "$T_LONG" "$PYTHON3" "$REF" check "$in" || fail "pulled models differ from the references"

stop_daemon_clean
echo "test_schedules.sh: PASS"
