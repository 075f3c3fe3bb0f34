"""Training-step time of FCN-8s in one process against DDP in two (torchrun, gloo on the CPU).

    .venv/bin/python -m deep.ddp_benchmark [--steps 10] [--width 16] [--crop 288 384]

One global batch (``--batch``, 8 by default, the configs' batch) per step, in bf16 +
channels-last (what :func:`deep.train.train` runs on this CPU) or float32 where the CPU has no
bf16. The setups, each its own ``torchrun`` launch of this module's worker so all pay the same
start-up:

* ``1 process x 1 thread``: one core's speed, the unit of the speed-ups;
* ``1 process x T threads`` (T = ``--threads``, default the machine's cores): what a config
  runs today (``n_threads``);
* ``P processes x 1 thread`` (P = T): DDP, each process a share ``batch / P`` of the batch,
  gradients averaged by all-reduce after the backward pass
  (:func:`deep.ddp.wrap`: ``DistributedDataParallel``).

Each setup takes ``--warmup`` untimed steps, then ``--steps`` timed ones; a step ends when
every process has finished it (a barrier), so the time is the slowest process's. The median is
kept, and the all-reduce's share is estimated in the DDP setup by timing the same steps with
``no_sync`` (no gradient communication) between the synced ones. The setups run one after the
other, the single-process one again at the end, so drift of the machine's load shows as a
difference between the first and last single-process numbers.

For N machines the step time of DDP is about compute / N + the all-reduce (which grows with
the parameter count, not with the batch): the report gives both shares. Results go to
``results/benchmarks/ddp.json`` and ``ddp.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from bench.datasets.root import REPO_ROOT
from bench.rows import write_text
from bench.system import environment
from deep.ddp import barrier, init_from_environment, process_group, wrap
from deep.fcn import build_network
from deep.train import TrainConfig, cpu_has_bf16, forward_logits, make_optimizer

log = logging.getLogger(__name__)
OUT_DIR = REPO_ROOT / "results" / "benchmarks"
N_CLASSES = 11


def worker(args: argparse.Namespace) -> None:
    """One process of a setup: time its steps, rank 0 writes them to ``args.out``."""
    torch.set_num_threads(args.threads)
    rank, world = init_from_environment() if "RANK" in os.environ else (0, 1)
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} does not split over {world} processes")
    precision = "bf16" if cpu_has_bf16() else "fp32"
    torch.manual_seed(0)  # every setup starts from the same weights
    net = build_network("fcn8s", "bilinear", N_CLASSES, args.width).train()
    if precision == "bf16":
        net.to(memory_format=torch.channels_last)
    model = wrap(net, torch.device("cpu"))
    optimizer = make_optimizer(net, TrainConfig(), precision)
    criterion = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(rank)  # each process its own share of the batch
    h, w = args.crop
    x = torch.rand(args.batch // world, 3, h, w, generator=gen) * 255
    y = torch.randint(0, N_CLASSES, (args.batch // world, h, w), generator=gen)

    def step(sync: bool) -> float:
        barrier()
        t0 = time.perf_counter()
        quiet = model.no_sync() if (not sync and world > 1) else nullcontext()
        with quiet:
            loss = criterion(forward_logits(model, x, precision), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        loss.item()
        barrier()  # the step ends when the slowest process is done
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        step(True)
    synced, local = [], []
    for _ in range(args.steps):
        synced.append(step(True))
        if world > 1:
            local.append(step(False))
    if rank == 0:
        Path(args.out).write_text(json.dumps({
            "processes": world, "threads": args.threads, "precision": precision,
            "step_s": synced, "no_sync_step_s": local,
            "parameters": sum(p.numel() for p in net.parameters()),
        }))  # fmt: skip
    if process_group()[1] > 1:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:  # torchrun takes no port 0
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes: int, threads: int, args: argparse.Namespace, tmp: Path) -> dict:
    """One setup: ``torchrun`` of this module's worker; its rank-0 timings."""
    out = tmp / f"p{processes}t{threads}-{time.monotonic_ns()}.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun), f"--nproc_per_node={processes}", f"--master_port={_free_port()}",
        "-m", "deep.ddp_benchmark", "--worker", "--out", str(out), "--threads", str(threads),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--width", str(args.width),
        "--batch", str(args.batch), "--crop", *map(str, args.crop),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log.info("%d process(es) x %d thread(s)", processes, threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["median_step_s"] = statistics.median(result["step_s"])
    if result["no_sync_step_s"]:
        result["median_no_sync_step_s"] = statistics.median(result["no_sync_step_s"])
    return result


def _markdown(r: dict) -> str:
    unit = r["setups"][0]["median_step_s"]
    lines = [
        "# Training-step time: one process against DDP (torchrun, gloo)",
        "",
        f"FCN-8s width {r['width']}, {r['crop'][0]}x{r['crop'][1]} crops, global batch "
        f"{r['batch']}, {r['setups'][0]['precision']}, "
        f"{r['setups'][0]['parameters'] / 1e6:.2f} M parameters; median of {r['steps']} steps "
        f"after {r['warmup']} warm-up steps; a step ends when every process has finished it. "
        f"Load average (1 min) {r['load_start']:.2f} at the start, {r['load_end']:.2f} at the "
        f"end on {r['cores']} cores.",
        "",
        "| setup | processes | threads each | ms per step | ms per image | speed-up vs 1x1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in r["setups"]:
        ms = 1000 * s["median_step_s"]
        lines.append(
            f"| {s['label']} | {s['processes']} | {s['threads']} | {ms:.0f} | "
            f"{ms / r['batch']:.1f} | {unit / s['median_step_s']:.2f}x |"
        )
    ddp = next(s for s in r["setups"] if s["processes"] > 1)
    comm = ddp["median_step_s"] - ddp["median_no_sync_step_s"]
    lines += [
        "",
        f"DDP's all-reduce: {1000 * comm:.0f} ms of its {1000 * ddp['median_step_s']:.0f} ms "
        f"step ({100 * comm / ddp['median_step_s']:.0f} %; the same steps without gradient "
        f"communication, `no_sync`, took {1000 * ddp['median_no_sync_step_s']:.0f} ms). For N "
        "processes on N machines, a step is about (compute of one process at batch / N) + the "
        "all-reduce, which is fixed by the parameter count, not the batch, and grows with the "
        "network between machines (here it is shared memory).",
        "",
        f"Command: `{r['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=[288, 384])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    t = args.threads
    plan = [
        (1, 1, "1 process x 1 thread"),
        (1, t, f"1 process x {t} threads"),
        (t, 1, f"DDP, {t} processes x 1 thread"),
        (1, t, f"1 process x {t} threads, again"),
    ]
    load_start = os.getloadavg()[0]
    setups = []
    with tempfile.TemporaryDirectory(prefix="segbench-ddp-bench-") as tmp:
        for processes, threads, label in plan:
            setups.append({"label": label, **launch(processes, threads, args, Path(tmp))})
    argv = sys.argv[1:] if argv is None else argv
    result = {
        "width": args.width, "crop": args.crop, "batch": args.batch, "steps": args.steps,
        "warmup": args.warmup, "cores": os.cpu_count(), "setups": setups,
        "load_start": load_start, "load_end": os.getloadavg()[0],
        "command": shlex.join([".venv/bin/python", "-m", "deep.ddp_benchmark", *argv]),
        "environment": environment(REPO_ROOT),
    }  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_text(args.out_dir / "ddp.json", json.dumps(result, indent=1))
    write_text(args.out_dir / "ddp.md", _markdown(result))
    log.info("wrote %s", args.out_dir / "ddp.md")
    return result


if __name__ == "__main__":
    main()
