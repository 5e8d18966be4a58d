#!/bin/sh
# test_deploy.sh - the Kubernetes manifests of deploy/k8s: they parse, every
# field that docs/CLUSTER.md ("Kubernetes fields") relies on is there with
# the value it states, and they agree with each other and with the shard map
# (tests/deploy_check.py says how). The check is shown to fail on manifests
# broken in three ways. The daemon accepts systemd/emad-cluster.conf (the
# emad@ instance configuration for bare hosts) with a map listing its self,
# and refuses it otherwise. With kubectl on PATH, `kubectl kustomize`
# renders the folder (offline). Exits 77 (skip) without PyYAML (Debian:
# python3-yaml).
#
# Environment (set by `make check`): top_builddir, top_srcdir, PYTHON3.
set -eu

test_name=test_deploy.sh
top_srcdir=${top_srcdir:-.}
# shellcheck source=tests/lib.sh
. "$top_srcdir/tests/lib.sh"

if ! "$PYTHON3" -c 'import yaml' 2>/dev/null; then
    echo "$test_name: SKIP: PyYAML not found (Debian: python3-yaml)" >&2
    exit 77
fi
check() { # K8S_DIR: deploy_check.py on it, with the built daemon
    timeout "$T" "$PYTHON3" "$top_srcdir/tests/deploy_check.py" "$1" "$top_srcdir/docs/CLUSTER.md" \
        "$EMAD"
}

check "$top_srcdir/deploy/k8s" >"$work/ok.out" 2>&1 || fail "$(cat "$work/ok.out")"
grep -q '^deploy_check: ok$' "$work/ok.out" || fail "no ok: $(cat "$work/ok.out")"

# The same check on broken copies: each must fail, naming what is wrong.
broken() { # SED-SCRIPT FILE EXPECTED-MESSAGE
    rm -rf "$work/k8s"
    cp -r "$top_srcdir/deploy/k8s" "$work/k8s"
    sed -i "$1" "$work/k8s/$2"
    if check "$work/k8s" >"$work/bad.out" 2>&1; then
        fail "a broken $2 ($1) passes: $(cat "$work/bad.out")"
    fi
    grep -q "$3" "$work/bad.out" || fail "broken $2 ($1): $(cat "$work/bad.out")"
}
broken 's|path: /healthz|path: /metrics|' statefulset.yaml "readinessProbe.httpGet.path is '/metrics'"
broken 's|tcp://emad-3.emad:7470|tcp://emad-4.emad:7470|' shardmap.yaml "pod 3 .* is not shard 1 replica 1"
broken 's|^  replicas: 4|  replicas: 3|' statefulset.yaml "replicas 3, the map has 2 x 2"

# The instance configuration of emad@ for bare hosts (systemd/emad-cluster.conf): the daemon
# accepts it with a map that lists its `self`, and refuses it with one that does not.
if "$EMAD" --help 2>&1 | grep -q -- --shard-map; then
    self=$(sed -n 's/^self = //p' "$top_srcdir/systemd/emad-cluster.conf")
    [ -n "$self" ] || fail "systemd/emad-cluster.conf has no self"
    printf 'epoch 1\nshard 0 %s tcp://emad-b.example.net:7470\n' "$self" >"$work/shards.map"
    sed "s|^shard-map = .*|shard-map = $work/shards.map|" "$top_srcdir/systemd/emad-cluster.conf" \
        >"$work/cluster.conf"
    timeout "$T" "$EMAD" --config "$work/cluster.conf" --print-config >"$work/printed" 2>&1 ||
        fail "emad refuses systemd/emad-cluster.conf: $(cat "$work/printed")"
    grep -qx "self = $self" "$work/printed" || fail "printed: $(cat "$work/printed")"
    grep -qx 'listen = tcp://0.0.0.0:7470' "$work/printed" || fail "printed: $(cat "$work/printed")"
    printf 'epoch 1\nshard 0 tcp://emad-b.example.net:7470\n' >"$work/shards.map"
    if timeout "$T" "$EMAD" --config "$work/cluster.conf" --print-config >"$work/printed" 2>&1; then
        fail "emad accepts a self that is not in the map"
    fi
fi

if command -v kubectl >/dev/null 2>&1; then
    timeout "$T" kubectl kustomize "$top_srcdir/deploy/k8s" >"$work/rendered.yaml" 2>"$work/kustomize.err" ||
        fail "kubectl kustomize: $(cat "$work/kustomize.err")"
    n=$(grep -c '^kind: ' "$work/rendered.yaml")
    [ "$n" -eq 4 ] || fail "kubectl kustomize rendered $n objects, not 4"
fi
echo "$test_name: ok"
