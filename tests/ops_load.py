"""Load and traffic helpers for tests/test_ops.sh (and by hand, as a bench).

    ops_load.py pushes URL MODEL FIRST_STEP COUNT ELEMENTS
        push COUNT steps of one float32 tensor "w" (ELEMENTS values) and one
        buffer "n" with the Python client; prints one JSON line: pushes,
        seconds, median and p99 latency in milliseconds.
    ops_load.py slowloris HOST PORT CONNECTIONS SECONDS [READY]
        hold CONNECTIONS HTTP connections open for SECONDS, each sending its
        request headers one byte every 2 s and never finishing them, from
        the source addresses 127.0.0.2 to 127.0.0.11 in turn; prints how many
        were still open at the end. With READY, creates that file once every
        connection is open.
    ops_load.py hammer HOST PORT THREADS SECONDS
        GET /metrics as fast as THREADS threads can for SECONDS; prints the
        number of complete 200 responses.
    ops_load.py rawpush HOST PORT MODEL
        send three bad pushes with plain sockets (nanomsg's SP framing by
        hand): a data size that does not match the shape (EMAD_ESIZE), an
        unknown dtype (EMAD_EDTYPE), and a request that is not a map
        (EMAD_EMALFORMED, op unknown); checks each gets that error.
    ops_load.py faults URL MODEL PID MIB COUNT
        push COUNT steps of a float32 model of MIB MiB (4 tensors, so
        libemad sends it as a transaction of chunks) back to back; prints
        one JSON line: the minor page faults of process PID (the daemon)
        during each push, from /proc/PID/stat.
    ops_load.py threads PID CPU|none
        check the CPU affinity of every thread of process PID
        (/proc/PID/task/*/status): with CPU, exactly one thread may run
        only on CPU and every other on the CPUs of the main thread; with
        none, every thread on the main thread's CPUs. Prints one JSON
        line: the main thread's CPUs and each thread's list.
    ops_load.py affinity URL PID CPU|none
        push a 16 MiB model (4 tensors, a transaction of chunks) twice with
        values v then w, pull it and check it equals the EMA
        v - (1 - 0.5) * (v - w) computed here; then as threads PID.
    ops_load.py release URL PID WAIT drop|keep
        push a 32 MiB model (4 tensors, a transaction of chunks) three
        times, so that the daemon (process PID) holds its spare shadows,
        then read its VmRSS every 50 ms for WAIT seconds or until it has
        dropped by 24 MiB; prints one JSON line (the RSS after the pushes
        and at the end, KiB, and the seconds waited) and checks that it
        dropped by 24 MiB within WAIT (drop) or by less than 8 MiB (keep).
    ops_load.py deny-setaffinity PROGRAM [ARG...]
        run PROGRAM with a seccomp filter under which sched_setaffinity
        fails with EPERM (as under the systemd unit without it allowed);
        exits 77 on a CPU architecture it does not know.
"""
import json
import os
import socket
import sys
import threading
import time

import sp_raw
from msgpack_min import pack


def pushes(url, model, first, count, elements):
    import numpy as np
    import emad

    client = emad.Client(url)
    w = np.arange(elements, dtype=np.float32)
    n = np.zeros(1, np.int64)
    lat = []
    t0 = time.perf_counter()
    for i in range(count):
        w += 1.0
        n[0] = first + i
        t = time.perf_counter()
        client.push(model, first + i, {"w": w}, buffers={"n": n})
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    client.close()
    lat.sort()
    print(json.dumps({"pushes": count, "seconds": round(total, 4),
                      "median_ms": round(lat[len(lat) // 2] * 1e3, 4),
                      "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, 4)}))


def minflt(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[7])  # field 10, minflt


def faults(url, model, pid, mib, count):
    import numpy as np
    import emad

    client = emad.Client(url)
    client.create(model, exist_ok=True)
    n = mib * (1 << 20) // 4 // 4
    tensors = {"t%d" % k: np.full(n, float(k), np.float32) for k in range(4)}
    out = []
    for step in range(1, count + 1):
        before = minflt(pid)
        client.push(model, step, tensors)
        out.append(minflt(pid) - before)
    client.close()
    print(json.dumps({"faults": out}))


def cpu_list(text):
    cpus = set()
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def push_and_pull(url):
    import numpy as np
    import emad

    client = emad.Client(url)
    client.create("aff", decay=0.5)
    n = 4 * (1 << 20) // 4
    v = {"t%d" % k: np.full(n, 1.0 + k, np.float32) for k in range(4)}
    w = {"t%d" % k: np.full(n, 3.0 + 2 * k, np.float32) for k in range(4)}
    client.push("aff", 1, v)
    client.push("aff", 2, w)
    got = client.pull("aff")
    client.close()
    for k in v:
        want = v[k] - np.float32(0.5) * (v[k] - w[k])
        assert np.array_equal(got[k], want), (k, got[k][:4], want[:4])


def threads(pid, expect):
    import glob

    lists = {}
    for path in glob.glob("/proc/%d/task/*/status" % pid):
        with open(path) as f:
            line = [x for x in f if x.startswith("Cpus_allowed_list:")][0]
        lists[int(path.split("/")[4])] = cpu_list(line.split(":", 1)[1])
    base = lists[pid]
    narrowed = sorted(t for t, c in lists.items() if c != base)
    out = {"main": sorted(base),
           "threads": {str(t): sorted(c) for t, c in sorted(lists.items())}}
    print(json.dumps(out))
    assert len(lists) >= 2, "expected the loop and nanomsg's threads: %s" % out
    if expect == "none":
        assert not narrowed, "threads narrowed: %s" % out
    else:
        cpu = int(expect)
        assert len(narrowed) == 1 and lists[narrowed[0]] == {cpu}, out
        assert cpu in base, out


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int([x for x in f if x.startswith("VmRSS:")][0].split()[1])


def release(url, pid, wait, expect):
    import numpy as np
    import emad

    client = emad.Client(url)
    client.create("rel", exist_ok=True)
    n = 8 * (1 << 20) // 4
    tensors = {"t%d" % k: np.full(n, float(k), np.float32) for k in range(4)}
    for step in range(1, 4):
        client.push("rel", step, tensors)
    client.close()
    if expect != "keep":  # waiting for a drop: as long as a busy machine may need
        wait *= float(os.environ.get("EMAD_TEST_TIMEOUT_SCALE") or 1)
    before = vm_rss_kib(pid)
    t0 = time.monotonic()
    now = before
    while time.monotonic() - t0 < wait and before - now < 24 * 1024:
        time.sleep(0.05)
        now = vm_rss_kib(pid)
    out = {"rss_after_pushes_kib": before, "rss_end_kib": now,
           "seconds": round(time.monotonic() - t0, 2)}
    print(json.dumps(out))
    if expect == "drop":
        assert before - now >= 24 * 1024, "spares not freed within %s s: %s" % (wait, out)
    elif expect == "keep":
        assert before - now < 8 * 1024, "memory freed within %s s: %s" % (wait, out)
    # "any": measured only (an allocator that keeps freed memory, as ASan's does)


def deny_setaffinity(argv):
    import ctypes
    import os
    import platform

    # (AUDIT_ARCH_*, __NR_sched_setaffinity) by machine
    arch = {"x86_64": (0xC000003E, 203), "aarch64": (0xC00000B7, 122)}.get(platform.machine())
    if arch is None:
        sys.exit(77)

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    ld_abs, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET
    allow, eperm = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    insns = (Insn * 6)(Insn(ld_abs, 0, 0, 4),  # seccomp_data.arch
                       Insn(jeq, 0, 3, arch[0]),  # another arch: allow
                       Insn(ld_abs, 0, 0, 0),  # seccomp_data.nr
                       Insn(jeq, 0, 1, arch[1]),
                       Insn(ret, 0, 0, eperm),
                       Insn(ret, 0, 0, allow))
    prog = Prog(6, ctypes.cast(insns, ctypes.POINTER(Insn)))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or \
            libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # NO_NEW_PRIVS, SECCOMP
        sys.exit("seccomp: %s" % os.strerror(ctypes.get_errno()))
    os.execv(argv[0], argv)


def slowloris(host, port, conns, seconds, ready=None):
    socks = []
    for k in range(conns):  # from 127.0.0.2..11: emad holds 8 connections per client address
        s = socket.create_connection((host, port), 5, ("127.0.0.%d" % (2 + k % 10), 0))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    if ready is not None:
        open(ready, "w").close()
    header = b"X-Slow: " + b"a" * 64
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
        alive = []
        for s in socks:
            try:
                s.sendall(header[i % len(header):i % len(header) + 1])
                alive.append(s)
            except OSError:
                s.close()
        socks = alive
        i += 1
    print(len(socks))
    for s in socks:
        s.close()


def hammer(host, port, threads, seconds):
    done = [0] * threads
    end = time.monotonic() + seconds

    def run(k):
        while time.monotonic() < end:
            try:
                s = socket.create_connection((host, port), 5)
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                buf = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                s.close()
                if buf.startswith(b"HTTP/1.1 200"):
                    done[k] += 1
            except OSError:
                time.sleep(0.01)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(sum(done))


def rawpush(host, port, model):
    s = socket.create_connection((host, port), 10)
    s.settimeout(10)
    sp_raw.handshake(s)

    def expect(rid, payload, name):
        sp_raw.send_message(s, sp_raw.request_id(rid) + payload)
        body = sp_raw.recv_message(s)
        assert pack(name) in body, "reply lacks %s: %r" % (name, body)

    push = {"v": 1, "op": "push", "model": model, "step": 1000, "tensors": [
        {"name": "w", "kind": "param", "dtype": "F32", "shape": [2], "data": b"\x00" * 4}]}
    expect(1, pack(push), "EMAD_ESIZE")
    push["tensors"][0]["data"] = b"\x00" * 8
    push["tensors"][0]["dtype"] = "F8"
    expect(2, pack(push), "EMAD_EDTYPE")
    expect(3, pack([1, 2, 3]), "EMAD_EMALFORMED")
    s.close()
    print("3 bad pushes refused")


def main(argv):
    cmd = argv[1]
    if cmd == "pushes":
        pushes(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]))
    elif cmd == "slowloris":
        slowloris(argv[2], int(argv[3]), int(argv[4]), float(argv[5]),
                  argv[6] if len(argv) > 6 else None)
    elif cmd == "hammer":
        hammer(argv[2], int(argv[3]), int(argv[4]), float(argv[5]))
    elif cmd == "rawpush":
        rawpush(argv[2], int(argv[3]), argv[4])
    elif cmd == "affinity":
        push_and_pull(argv[2])
        threads(int(argv[3]), argv[4])
    elif cmd == "release":
        release(argv[2], int(argv[3]), float(argv[4]), argv[5])
    elif cmd == "deny-setaffinity":
        deny_setaffinity(argv[2:])
    elif cmd == "threads":
        threads(int(argv[2]), argv[3])
    elif cmd == "faults":
        faults(argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6]))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
