"""One rank of the data-parallel test (test_parallel.py): DDP on CPU with gloo.

Trains a small model with BatchNorm for a few steps, every rank on its own
data (DDP averages the gradients, so the parameters stay equal; the
BatchNorm statistics differ), and pushes every step with
``push_module(..., wait=False)``, rank and world size taken from
torch.distributed. Rank 0 also keeps the single-process reference EMA (the
reference formula on its own parameters, its own buffers copied) and saves
it. Each rank writes its client's counters to <out>/rank<r>.json.

Usage: ddp_worker.py URL OUT_DIR STEPS DECAY  (with RANK, WORLD_SIZE, MASTER_PORT set)
"""

import json
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

import emad


def main():
    url, out, steps, decay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%s" % os.environ["MASTER_PORT"],
                            rank=rank, world_size=world, timeout=timedelta(seconds=120))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    client = emad.Client(url)
    if rank == 0:
        client.create("ddp", decay=decay, writers=world)
    dist.barrier()
    gen = torch.Generator().manual_seed(100 + rank)
    ref = {}
    for step in range(1, steps + 1):
        x = torch.randn(8, 16, generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        loss = nn.functional.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        client.push_module("ddp", ddp, step, wait=False)
        if rank == 0:
            with torch.no_grad():
                for name, p in ddp.named_parameters():
                    if name not in ref:
                        ref[name] = p.detach().clone()
                    else:
                        ref[name].sub_((1.0 - decay) * (ref[name] - p))
                for name, b in ddp.named_buffers():
                    ref[name] = b.detach().clone()
    client.flush()
    with open(os.path.join(out, "rank%d.json" % rank), "w") as f:
        json.dump(dict(client.health(), rank=rank, n_steps=steps), f)
    if rank == 0:
        torch.save(ref, os.path.join(out, "ref.pt"))
    dist.barrier()
    client.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
