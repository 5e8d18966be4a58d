"""deploy_check.py - checks the Kubernetes manifests of deploy/k8s against
docs/CLUSTER.md and against each other.

  deploy_check.py K8S_DIR CLUSTER_MD [EMAD]

1. Every file that kustomization.yaml lists parses (PyYAML), and the
   objects are one ConfigMap, one headless Service, one StatefulSet and one
   PodDisruptionBudget.
2. Every row of the table "Kubernetes fields" in docs/CLUSTER.md
   (| `Kind/name` | `field.path` | `value` |) names a field that exists with
   that value (a value of "(set)" only needs the field to exist). Paths are
   dot-separated; `[name=X]` picks the list element whose name is X, `[N]`
   the N-th, `[KEY]` the map entry KEY (a key with dots).
3. Cross-references: the StatefulSet's serviceName is the Service; the
   Service and the budget select the pod template's labels; the shard map
   (the ConfigMap's key, mounted where --shard-map points) parses, has
   S x R = spec.replicas URLs, and pod K's URL tcp://emad-K.SERVICE:PORT
   (what --self gives it from POD_NAME) is shard K / R, replica K % R; the
   ports of the args are the named container ports; --state-dir is the
   volume claim's mount; the probes use the named ports.
4. With EMAD (the built daemon), pod 0's arguments with POD_NAME
   substituted are accepted by `emad ... --print-config` (and a --self that
   is not in the map is refused) when the daemon knows --shard-map.
Prints "deploy_check: ok" or one line per problem, and exits 1 on any.
"""

import os
import re
import subprocess
import sys
import tempfile

import yaml

problems = []


def problem(msg):
    problems.append(msg)
    print("deploy_check: " + msg)


def load_objects(k8s):
    with open(os.path.join(k8s, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    objs = {}
    for res in kust.get("resources", []):
        with open(os.path.join(k8s, res)) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                key = "%s/%s" % (doc["kind"], doc["metadata"]["name"])
                if key in objs:
                    problem("%s defined twice" % key)
                objs[key] = doc
    listed = {f for f in os.listdir(k8s) if f.endswith(".yaml") and f != "kustomization.yaml"}
    if listed != set(kust.get("resources", [])):
        problem("kustomization.yaml lists %s, the folder has %s"
                % (sorted(kust.get("resources", [])), sorted(listed)))
    return objs


def resolve(obj, path):
    """The value at path (see the module doc), or raise KeyError."""
    for part in re.findall(r"[^.\[\]]+|\[[^\]]*\]", path):
        if part.startswith("["):
            sel = part[1:-1]
            if "=" in sel:
                k, v = sel.split("=", 1)
                hits = [e for e in obj if isinstance(e, dict) and str(e.get(k)) == v]
                if len(hits) != 1:
                    raise KeyError(part)
                obj = hits[0]
            elif sel.isdigit():
                obj = obj[int(sel)]
            else:
                obj = obj[sel]
        else:
            if not isinstance(obj, dict) or part not in obj:
                raise KeyError(part)
            obj = obj[part]
    return obj


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def check_doc_table(objs, md):
    with open(md) as f:
        text = f.read()
    m = re.search(r"^#+ Kubernetes fields\s*$(.*?)(?=^#)", text, re.M | re.S)
    if m is None:
        problem("%s has no section 'Kubernetes fields'" % md)
        return
    rows = re.findall(r"^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|\s*`([^`]*)`\s*\|", m.group(1), re.M)
    if len(rows) < 10:
        problem("the table 'Kubernetes fields' has %d rows" % len(rows))
    for key, path, want in rows:
        if key not in objs:
            problem("docs name %s, the manifests have %s" % (key, sorted(objs)))
            continue
        try:
            got = resolve(objs[key], path)
        except (KeyError, IndexError, ValueError, TypeError):
            problem("%s has no field %s (docs/CLUSTER.md relies on it)" % (key, path))
            continue
        if want != "(set)" and scalar(got) != want:
            problem("%s %s is %r, docs/CLUSTER.md says %r" % (key, path, scalar(got), want))


def parse_map(text):
    """A shard map (docs/CLUSTER.md): (epoch, ack, [[url, ...] per shard])."""
    epoch, ack, shards = None, 1, {}
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "epoch" and len(words) == 2:
            epoch = int(words[1])
        elif words[0] == "ack" and len(words) == 2:
            ack = int(words[1])
        elif words[0] == "shard" and len(words) >= 3:
            shards[int(words[1])] = words[2:]
        else:
            raise ValueError("line %d: %r" % (n, line))
    if epoch is None or epoch < 1 or sorted(shards) != list(range(len(shards))):
        raise ValueError("no epoch, or shards not numbered 0..S-1")
    r = {len(u) for u in shards.values()}
    if len(r) != 1 or not 1 <= ack <= r.pop():
        raise ValueError("shards with different replica counts, or ack out of range")
    return epoch, ack, [shards[s] for s in range(len(shards))]


def arg_value(args, flag):
    if flag in args and args.index(flag) + 1 < len(args):
        return args[args.index(flag) + 1]
    problem("the container's args have no %s" % flag)
    return ""


def check_cross(objs, emad):
    sts = [o for o in objs.values() if o["kind"] == "StatefulSet"]
    svc = [o for o in objs.values() if o["kind"] == "Service"]
    cms = [o for o in objs.values() if o["kind"] == "ConfigMap"]
    pdb = [o for o in objs.values() if o["kind"] == "PodDisruptionBudget"]
    if not (len(sts) == len(svc) == len(cms) == len(pdb) == 1):
        problem("want one StatefulSet, Service, ConfigMap and PodDisruptionBudget: %s" % sorted(objs))
        return
    sts, svc, cm, pdb = sts[0], svc[0], cms[0], pdb[0]
    name = svc["metadata"]["name"]
    spec = sts["spec"]
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    if spec.get("serviceName") != name:
        problem("StatefulSet serviceName %r is not the Service %r" % (spec.get("serviceName"), name))
    if svc["spec"].get("clusterIP") != "None":
        problem("the Service is not headless (clusterIP None)")
    for what, sel in (("Service", svc["spec"]["selector"]),
                      ("StatefulSet", spec["selector"]["matchLabels"]),
                      ("PodDisruptionBudget", pdb["spec"]["selector"]["matchLabels"])):
        if any(labels.get(k) != v for k, v in sel.items()):
            problem("the %s selects %s, the pods are labelled %s" % (what, sel, labels))
    (c,) = [c for c in pod["spec"]["containers"] if c["name"] == "emad"]
    args = [str(a) for a in c["args"]]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    svc_ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    if set(ports) != {"emad", "http"} or any(svc_ports.get(k) != v for k, v in ports.items()):
        problem("container ports %s, Service ports %s" % (ports, svc_ports))
    env = {e["name"]: e for e in c.get("env", [])}
    if resolve(env.get("POD_NAME", {}), "valueFrom.fieldRef.fieldPath") != "metadata.name":
        problem("POD_NAME is not the pod's name")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    # The shard map: the ConfigMap's only key, mounted where --shard-map points.
    (key, text), = cm["data"].items()
    (mvol,) = [n for n, v in vols.items()
               if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
    if arg_value(args, "--shard-map") != os.path.join(mounts[mvol], key):
        problem("--shard-map %s is not the mounted %s/%s" % (arg_value(args, "--shard-map"),
                                                             mounts[mvol], key))
    try:
        epoch, ack, shards = parse_map(text)
    except ValueError as e:
        problem("the shard map does not parse: %s" % e)
        return
    r = len(shards[0])
    if spec["replicas"] != len(shards) * r:
        problem("replicas %d, the map has %d x %d" % (spec["replicas"], len(shards), r))
    self_tmpl = arg_value(args, "--self")
    want_tmpl = "tcp://$(POD_NAME).%s:%d" % (name, ports["emad"])
    if self_tmpl != want_tmpl:
        problem("--self is %r, not %r" % (self_tmpl, want_tmpl))
    sts_name = sts["metadata"]["name"]
    for k in range(spec["replicas"]):
        url = self_tmpl.replace("$(POD_NAME)", "%s-%d" % (sts_name, k))
        if k // r >= len(shards) or shards[k // r][k % r] != url:
            problem("pod %d (%s) is not shard %d replica %d of the map" % (k, url, k // r, k % r))
    if arg_value(args, "--listen") != "tcp://0.0.0.0:%d" % ports["emad"]:
        problem("--listen is not port emad on every address")
    if arg_value(args, "--http") != "0.0.0.0:%d" % ports["http"]:
        problem("--http is not port http on every address")
    claims = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])]
    if len(claims) != 1 or arg_value(args, "--state-dir") != mounts.get(claims[0]):
        problem("--state-dir is not the volume claim's mount")
    if resolve(c, "readinessProbe.httpGet.port") not in ports:
        problem("the readiness probe does not use a named port")
    if emad:
        check_daemon(emad, args, sts_name, text)


def check_daemon(emad, args, sts_name, text):
    with open(os.devnull) as devnull:
        helptext = subprocess.run([emad, "--help"], stdout=subprocess.PIPE, stderr=devnull,
                                  universal_newlines=True, timeout=60).stdout
    if "--shard-map" not in helptext:
        print("deploy_check: %s has no --shard-map yet: the daemon's check left out" % emad)
        return
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "shards.map")
        with open(path, "w") as f:
            f.write(text)
        base = [a.replace("$(POD_NAME)", sts_name + "-0") for a in args]
        base[base.index("--shard-map") + 1] = path
        base[base.index("--state-dir") + 1] = os.path.join(d, "state")
        ok = subprocess.run([emad] + base + ["--print-config"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
        if ok.returncode != 0:
            problem("emad refuses pod 0's arguments: %s" % ok.stdout.strip())
        bad = list(base)
        bad[bad.index("--self") + 1] = "tcp://nowhere.%s:1" % sts_name
        no = subprocess.run([emad] + bad + ["--print-config"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
        if no.returncode == 0:
            problem("emad accepts a --self that is not in the map")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: deploy_check.py K8S_DIR CLUSTER_MD [EMAD]")
    objs = load_objects(sys.argv[1])
    check_doc_table(objs, sys.argv[2])
    try:
        check_cross(objs, sys.argv[3] if len(sys.argv) == 4 else None)
    except (KeyError, ValueError, TypeError) as e:
        problem("a manifest lacks what the checks need: %r" % (e,))
    if problems:
        sys.exit(1)
    print("deploy_check: ok")


if __name__ == "__main__":
    main()
