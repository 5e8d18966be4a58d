#!/usr/bin/env python3
"""Independent reimplementation of the cluster placement rule (docs/PROTOCOL.md,
"Placement"), written from the documentation: prints the expected pieces that
tests/check_cluster.c compares src/common/placement.c against.

Usage: placement_ref.py SHARDS NAME:DTYPE_SIZE:NUMEL ...
Prints one line per piece: tensor_index shard offset count whole."""
import sys

SPLIT = 4 << 20


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def place(shards, name, esize, numel):
    h = fnv1a64(name.encode("utf-8"))
    if shards <= 1 or numel * esize < SPLIT or numel < shards:
        return [(h % shards, 0, numel, 1)]
    base, extra = divmod(numel, shards)
    out, off = [], 0
    for k in range(shards):
        cnt = base + (1 if k < extra else 0)
        out.append(((k + h % shards) % shards, off, cnt, 0))
        off += cnt
    return out


def main():
    shards = int(sys.argv[1])
    for i, spec in enumerate(sys.argv[2:]):
        name, esize, numel = spec.rsplit(":", 2)
        for shard, off, cnt, whole in place(shards, name, int(esize), int(numel)):
            print(i, shard, off, cnt, whole)


if __name__ == "__main__":
    main()
