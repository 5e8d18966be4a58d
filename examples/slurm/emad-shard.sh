#!/bin/sh
# emad-shard.sh RUN_DIR - one emad daemon of the cluster, as task $SLURM_PROCID of the
# servers' job step (examples/slurm/emad-cluster.sbatch; docs/CLUSTER.md, "Slurm").
#
# Task K reports the host it landed on (RUN_DIR/host.K), waits for the shard
# map that the batch script writes once every task has reported, and runs
# emad as the replica the map gives it (shard K / R, replica K % R): nanomsg
# port BASE + 2K and HTTP port BASE + 2K + 1 (distinct per task, so several
# tasks may share a node), state in RUN_DIR/state.K. emad stays in the
# foreground: srun forwards SIGTERM to it when the step is cancelled, and it
# writes its snapshots and exits.
#
# Environment: EMAD (the daemon, default emad), EMAD_PORT (BASE, default 7470),
# EMAD_HOST (address to report, default: this node's hostname), EMAD_AUTH_FILE.
set -eu
run=$1
k=${SLURM_PROCID:?run this as a task of srun (SLURM_PROCID)}
base=${EMAD_PORT:-7470}
port=$((base + 2 * k))
host=${EMAD_HOST:-$(hostname)}

echo "$host" >"$run/host.$k.tmp"
mv "$run/host.$k.tmp" "$run/host.$k"
i=0
while [ ! -f "$run/shards.map" ]; do
    i=$((i + 1))
    if [ "$i" -gt 3000 ]; then
        echo "emad-shard.sh: task $k: no shard map in $run after 5 minutes" >&2
        exit 1
    fi
    sleep 0.1
done
# With EMAD_AUTH_FILE (users and keys, docs/SECURITY.md; give the trainers EMAD_KEY_FILE) every
# request is authenticated; without it the daemon listens unauthenticated (--insecure): keep the
# job's nodes on a private network.
if [ -n "${EMAD_AUTH_FILE:-}" ]; then
    set -- --auth-file "$EMAD_AUTH_FILE"
else
    set -- --insecure
fi
exec "${EMAD:-emad}" "$@" --shard-map "$run/shards.map" --self "tcp://$host:$port" \
    --listen "tcp://0.0.0.0:$port" --http "0.0.0.0:$((port + 1))" --state-dir "$run/state.$k" \
    --snapshot-interval 60 2>"$run/emad.$k.log"
