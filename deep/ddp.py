"""Data-parallel training across processes (torch.distributed, launched by ``torchrun``).

Both training loops (:func:`deep.train.train` for the FCNs, :func:`deep.patch_train.
train_patch_net` for the patch classifier) run unchanged in one process and, inside a process
group, as DistributedDataParallel: every process takes its share of each global batch (the
batch size stays the config's, split over the processes, so the schedule is one process's),
DDP averages the gradients, the floating-point buffers (batch-norm statistics) are averaged
after each epoch so every process holds the same network, validation confusion matrices are
summed over the processes (each scores its share of the batches: the integer counts, hence the
scores, equal one process's on the same weights), and only the first process writes
checkpoints. Gloo on the CPU, NCCL on CUDA.

Sharding each in-memory batch by rank is what :class:`torch.utils.data.DistributedSampler`
does for a ``DataLoader``; the loops index tensors held in memory, so the slice is taken
directly.

Run a config's networks on N processes, then score them here in the first process (the same
runner, so the rows are the usual rows; their checkpoints record the process count)::

    torchrun --nproc_per_node=2 -m deep.ddp configs/deep_full.yaml --only fcn8s

Weights trained by N processes are not those of one (other batch-norm statistics per
process, other summation order), so a checkpoint's key holds the process count when it is
above 1: a single-process run never reuses them as its own.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the process group this process is in; ``(0, 1)`` alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_first() -> bool:
    """Whether this process writes files (the only one, or rank 0 of a group)."""
    return process_group()[0] == 0


def barrier() -> None:
    """Wait for every process of the group (nothing alone)."""
    if process_group()[1] > 1:
        dist.barrier()


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the group, in place (unchanged alone)."""
    if process_group()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (batch-norm running statistics) over the group.

    DDP keeps the parameters equal; each process's batch-norm statistics follow its own share
    of the batches, so without this the processes would validate different networks.
    """
    _, world = process_group()
    if world == 1:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` as DistributedDataParallel inside a group (itself alone).

    Buffers are not synchronised at every forward: they are averaged
    once per epoch (:func:`average_buffers`) instead.
    """
    if process_group()[1] == 1:
        return model
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    # torch 2.13 renamed the switch (buffers are still made equal once, at wrapping)
    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    sync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **{sync: False})


def init_from_environment() -> tuple[int, int]:
    """Join the group ``torchrun`` describes (gloo on the CPU, NCCL with CUDA)."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return process_group()


def main(argv: list[str] | None = None) -> int:
    """Train the networks of a config in a process group, then score them in rank 0."""
    from bench.config import load_config
    from bench.datasets import load_splits
    from bench.errors import SegbenchError
    from bench.methods import build_method
    from bench.runner import LOCAL_DIR, RUNS_DIR, run_config, seeded_params

    parser = argparse.ArgumentParser(
        prog="torchrun ... -m deep.ddp", description=__doc__.split("\n")[0]
    )
    parser.add_argument("config")
    parser.add_argument("--only", nargs="+", metavar="ID", help="method ids (default: all)")
    parser.add_argument("--store", default=str(LOCAL_DIR), help="results store (rank 0 writes)")
    parser.add_argument("--runs-dir", default=str(RUNS_DIR), help="checkpoints and predictions")
    args = parser.parse_args(argv)
    rank, world = init_from_environment()
    old_factory = logging.getLogRecordFactory()

    def factory(*a, **k):  # noqa: ANN002, ANN003, ANN202 - every line says its rank
        record = old_factory(*a, **k)
        record.rank = rank
        return record

    logging.setLogRecordFactory(factory)
    status = 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank%(rank)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        specs = [m for m in cfg.methods if not args.only or m.id in args.only]
        for fold in cfg.folds or [None]:
            train, val, _ = load_splits(cfg, fold)
            for spec in specs:
                for seed in cfg.seeds:
                    params = seeded_params(spec.name, spec.params, seed, Path(args.runs_dir))
                    method = build_method(spec.name, params)
                    if not hasattr(method, "checkpoint_dir"):
                        if rank == 0:
                            log.info("%s is not a network: left to `segbench run`", spec.id)
                        continue
                    log.info("%s seed %d: training on %d processes", spec.id, seed, world)
                    method.fit(train, val_dataset=val)
                    barrier()
        # every network is trained: the first process scores them through the runner, which
        # finds the finished checkpoints (their keys hold this process count) and reuses them
        if rank == 0:
            rows = run_config(
                cfg, only=args.only, results_dir=Path(args.store), runs_dir=Path(args.runs_dir)
            )
            failed = [r["method"] for r in rows if r["status"] != "ok"]
            if failed:
                print(f"error: rows failed: {', '.join(failed)}", file=sys.stderr)
                status = 1
        barrier()
    except SegbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
