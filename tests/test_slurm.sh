#!/bin/sh
# test_slurm.sh - the Slurm example (examples/slurm/emad-cluster.sbatch): an
# emad cluster of 2 shards x 2 replicas as a job step beside a trainer
# (examples/train.py, 40 steps), then the servers stopped.
#  1. Without Slurm: the script's own local mode (the same steps, tasks as
#     background processes on 127.0.0.1).
#  2. Under a single-machine Slurm from Debian's slurm-wlm when it is
#     installed and this runs as root: a private munged, slurmctld and slurmd
#     (own ports, own state under the work dir, removed at the end), and
#     `sbatch --wait` of the example. Skipped otherwise (said on stderr).
# Each run must show the 4 daemons serving, the trainer done, every replica
# of the map at step 40 in `emactl cluster status`, the servers stopped with
# a snapshot of the model in each replica's state directory.
# Exits 77 (skip) when torch is missing or the daemon has no cluster mode.
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_slurm.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

if ! timeout "$T" "$PYTHON3" -c 'import torch' >/dev/null 2>&1; then
    echo "$test_name: SKIP: $PYTHON3 cannot import torch (examples/train.py)" >&2
    exit 77
fi
if ! "$EMAD" --help 2>&1 | grep -q -- --shard-map; then
    echo "$test_name: SKIP: $EMAD has no cluster mode (--shard-map)" >&2
    exit 77
fi
client_env
top_srcdir=$(cd "$top_srcdir" && pwd)
EMAD=$(cd "$(dirname "$EMAD")" && pwd)/emad
EMACTL=$(cd "$(dirname "$EMACTL")" && pwd)/emactl
export EMAD EMACTL PYTHON3
steps=40
# A libemad built with --enable-asan needs the AddressSanitizer runtime loaded first into Python.
train_python=$PYTHON3
if [ -n "$asan_rt" ]; then
    train_python="env LD_PRELOAD=$asan_rt ASAN_OPTIONS=detect_leaks=0 $PYTHON3"
fi
export EMAD_TRAIN="$train_python $top_srcdir/examples/train.py --steps $steps --model example-cnn"

# Check the output OUT of a run in run directory RUN.
check_run() {
    grep -q '^emad-cluster: 4 daemons serving' "$1" || fail "the cluster did not come up: $(tail -n 20 "$1")"
    grep -q "^done: $steps steps pushed to example-cnn" "$1" || fail "the trainer did not finish: $(tail -n 20 "$1")"
    n=$(awk -v s="$steps" '$1 ~ /^[0-9]+$/ && $6 == s && $NF == "serving"' "$1" | wc -l)
    [ "$n" -eq 4 ] || fail "not 4 replicas at step $steps: $(tail -n 8 "$1")"
    grep -q '^emad-cluster: servers stopped' "$1" || fail "servers not stopped: $(tail -n 5 "$1")"
    for k in 0 1 2 3; do
        ls "$2/state.$k"/* >/dev/null 2>&1 || fail "no snapshot in $2/state.$k"
        if pgrep -f -- "--state-dir $2/state.$k" >/dev/null 2>&1; then
            fail "daemon $k still runs after the job"
        fi
    done
}

# Ports BASE .. BASE + 7, free, below the kernel's range of ephemeral ports (where the
# clients' own connections take theirs).
pick_base() {
    timeout "$T" "$PYTHON3" - <<'PY' || fail "cannot pick free ports"
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    base = random.randrange(10001, lo - 16, 2)
    socks = []
    try:
        for i in range(8):
            s = socket.socket()
            s.bind(("0.0.0.0", base + i))
            socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    break
else:
    raise SystemExit("no 8 free ports")
PY
}

# 1. The local mode.
EMAD_PORT=$(pick_base)
export EMAD_PORT
# A port of the range can still be taken by another process's connection meanwhile: the job
# then ends saying a server exited, and the run is tried again on other ports.
for _try in 1 2 3; do
    rm -rf "$work/local"
    if EMAD_RUN_DIR=$work/local timeout "$T_LONG" bash "$top_srcdir/examples/slurm/emad-cluster.sbatch" \
        >"$work/local.out" 2>&1; then
        break
    fi
    grep -q "a server exited before the cluster came up" "$work/local.out" && [ "$_try" -lt 3 ] ||
        fail "local run: $(tail -n 30 "$work/local.out")"
    EMAD_PORT=$(pick_base)
done
check_run "$work/local.out" "$work/local"
echo "$test_name: local mode ok"

# 2. A single-machine Slurm.
for prog in munged slurmctld slurmd sbatch srun; do
    if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$prog" ]; then
        echo "$test_name: Slurm part skipped: $prog not found (Debian: slurm-wlm)" >&2
        echo "$test_name: ok"
        exit 0
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "$test_name: Slurm part skipped: needs root (slurmd)" >&2
    echo "$test_name: ok"
    exit 0
fi
sl=$work/slurm
mkdir -p "$sl/state" "$sl/spool" "$sl/munge"
chmod 700 "$sl/munge"
spids=
stop_slurm() { # the jobs of our private Slurm, then the daemons this test started, by PID
    if [ -n "$spids" ]; then
        timeout 20 scancel --user="$(id -un)" >/dev/null 2>&1 || true
        i=0
        while [ "$i" -lt 40 ] && [ -n "$(timeout 10 squeue -h 2>/dev/null)" ]; do
            sleep 0.5
            i=$((i + 1))
        done
    fi
    for p in $spids; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $spids; do wait "$p" 2>/dev/null || true; done
    spids=
}
slurm_exit() { # the EXIT trap: our Slurm daemons, then lib.sh's cleanup with the status
    _st=$?
    stop_slurm
    if [ "$_st" -eq 0 ]; then cleanup; else slurm_return "$_st" || cleanup; fi
}
slurm_return() { return "$1"; }
trap slurm_exit EXIT
# munged: a fresh key, our own socket; stays in the foreground (-F) so that we own its PID.
dd if=/dev/urandom of="$sl/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$sl/munge/munge.key"
PATH=$PATH:/usr/sbin
munged -F --force --key-file="$sl/munge/munge.key" --socket="$sl/munge/sock" \
    --pid-file="$sl/munge/pid" --seed-file="$sl/munge/seed" --log-file="$sl/munge/log" \
    >/dev/null 2>&1 &
spids="$spids $!"
node=$(hostname)
ctld_port=$(pick_port)
slurmd_port=$(pick_port)
cat >"$sl/slurm.conf" <<EOF
ClusterName=emadtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$sl/munge/sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$sl/state
SlurmdSpoolDir=$sl/spool
SlurmctldPidFile=$sl/slurmctld.pid
SlurmdPidFile=$sl/slurmd.pid
SlurmctldLogFile=$sl/slurmctld.log
SlurmdLogFile=$sl/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=emadtest Nodes=ALL Default=YES MaxTime=30 State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$sl/slurm.conf
i=0
while [ ! -S "$sl/munge/sock" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
slurmctld -D -i >"$sl/ctld.out" 2>&1 &
spids="$spids $!"
slurmd -D -N "$node" >"$sl/d.out" 2>&1 &
spids="$spids $!"
i=0
until timeout 10 sinfo -h -o '%t' 2>/dev/null | grep -q idle; do
    i=$((i + 1))
    [ "$i" -lt "$(scaled 60)" ] || fail "Slurm did not come up: $(tail -n 5 "$sl/slurmctld.log" "$sl/slurmd.log" 2>&1)"
    sleep 1
done
for _try in 1 2 3; do
    EMAD_PORT=$(pick_base)
    export EMAD_PORT
    rm -rf "$work/slurm-run"
    if (cd "$top_srcdir" && EMAD_RUN_DIR=$work/slurm-run EMAD_HOST=127.0.0.1 timeout "$T_LONG" \
        sbatch --wait --ntasks=5 --output="$work/slurm.out" examples/slurm/emad-cluster.sbatch) \
        >"$work/sbatch.out" 2>&1; then
        break
    fi
    # a port taken meanwhile: the job ends at once saying so, and runs again on other ports
    grep -q "a server exited before the cluster came up" "$work/slurm.out" && [ "$_try" -lt 3 ] ||
        fail "sbatch: $(cat "$work/sbatch.out") $(tail -n 30 "$work/slurm.out" 2>&1)"
done
check_run "$work/slurm.out" "$work/slurm-run"
echo "$test_name: Slurm mode ok (slurm-wlm $(sinfo -V 2>/dev/null | cut -d' ' -f2))"
echo "$test_name: ok"
