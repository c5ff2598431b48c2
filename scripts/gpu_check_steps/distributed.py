"""Step 8: a 2-rank certification through torchrun (NCCL on two GPUs, gloo on the CPU in the dry
run), whose merged record must equal the counts one process samples."""
from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

from gpu_check_steps.framework import ROOT, Check, Skip, StepFailed, step
from gpu_check_steps.processes import run_command


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks_possible(ctx) -> bool:
    """Whether two ranks can run: always on the CPU (dry run), else with two GPUs."""
    import torch
    return ctx.dry or torch.cuda.device_count() >= 2


@step("distributed", "2-rank certification via torchrun (NCCL on GPUs)", estimate=(40, 12), cap=(120, 25),
      applies=_two_ranks_possible)
def step_distributed(ctx: Check, res: dict) -> None:
    """`python -m torch.distributed.run --nproc-per-node 2 -m csrs_core -- certify ...` on two GPUs
    (NCCL); checks that the merged record equals counts sampled in one process and no rank's
    shard is left. The dry run runs it on the CPU with gloo."""
    import numpy as np
    import torch

    from csrs_core.data import load_dataset, select_examples
    from csrs_core.models.checkpoints import load_model
    from csrs_core.sampling.counts import sample_counts
    from csrs_core.sampling.store import cert_dir, list_records, load_record
    s, dev = ctx.sizes, ctx.device()
    gpus = torch.cuda.device_count()
    if dev.type == "cuda" and gpus < 2:
        ctx.log(f"skipped: torch.cuda.device_count() = {gpus}; a 2-rank NCCL run needs 2 GPUs")
        raise Skip(f"torch.cuda.device_count() = {gpus}: a 2-rank NCCL run needs 2 GPUs")
    backend = "NCCL" if dev.type == "cuda" else "gloo (dry run: CPU ranks)"
    copy = ctx.tmp / "distributed" / Path(ctx.args.checkpoint).name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / ctx.args.checkpoint, copy)
    sample = ROOT / ctx.args.sample
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "csrs_core", "--", "certify", "--checkpoint", str(copy), "--dataset", f"sample:{sample}",
           "--num-examples", str(s.dist_examples), "--n0", str(s.dist_n0), "--n", str(s.dist_n), "--quiet"]
    cmd += ["--precision", "bf16"] if dev.type == "cuda" else ["--device", "cpu", "--precision", "fp32",
                                                               "--batch", "16", "--threads", "1"]
    res["command"] = " ".join(cmd[1:])
    ctx.log(f"{backend}: $ python {res['command']}")
    t = time.monotonic()
    rc, out = run_command(cmd, timeout=ctx.left() - 5)
    res.update(rc=rc, seconds=round(time.monotonic() - t, 1), output=out[-8_000:])
    for line in out.strip().splitlines()[-8:]:
        ctx.log(f"| {line}")
    if rc != 0:
        raise StepFailed(f"torchrun exit code {rc}")
    [info] = [r for r in list_records(copy) if r.status == "valid"]
    merged = info.meta
    data = load_dataset(f"sample:{sample}")
    data = data.subset(select_examples(data.labels.numpy(), s.dist_examples))
    model, meta = load_model(copy)
    one0, one = sample_counts(model, data.images, data.indices, len(meta["classes"]), meta["sigma"], s.dist_n0,
                              s.dist_n, merged["batch"], device=dev, precision=merged["precision"])
    record = load_record(info.path)
    same = int((record.counts == one).all(1).sum())
    res.update(merged_record=info.path.name, identical_rows=same, examples=len(one),
               leftover_shards=[p.name for p in cert_dir(copy).glob("*rank*-of-*.npz")])
    ctx.log(f"merged record {info.path.name} ({merged['device']}, {merged['precision']}, batch {merged['batch']}): "
            f"{same} of {len(one)} rows equal to one process on {dev}; torchrun took {res['seconds']} s")
    ctx.check("2 ranks merge into the counts one process samples", same == len(one) and np.array_equal(
        record.counts0, one0) and not res["leftover_shards"], f"{same} of {len(one)} rows identical")
