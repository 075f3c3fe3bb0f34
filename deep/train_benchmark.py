"""Training-step speed of the FCNs in float32, bf16 autocast and bf16 + channels-last.

    .venv/bin/python -m deep.train_benchmark [--threads 2] [--steps 5] [--out DIR]

In one run it measures the reference rates of ``torch.mm`` (2048x2048, float32 and bfloat16)
and then, for FCN-8s at widths 8, 16 and 32, the milliseconds per image of one full training
step (forward, float32 loss, backward, AdamW step; batch 4) and its achieved GFLOP/s
(forward + backward FLOPs from :class:`torch.utils.flop_counter.FlopCounterMode`). Width 8 is
timed on the CPU profile's 96x128 crops, widths 16 and 32 on 288x384 crops (the full
profile's). Every training rate is also given as a share of the bf16 ``torch.mm`` rate of the
same run: the goal is at least 40 %. Results go to ``results/benchmarks/train.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.datasets.root import REPO_ROOT
from bench.rows import write_text
from bench.system import cpu_model
from deep.fcn import build_network
from deep.train import cpu_has_bf16, forward_logits

log = logging.getLogger(__name__)

#: (width, crop H, crop W) of the timed networks.
CASES = ((8, 96, 128), (16, 288, 384), (32, 288, 384))
#: (name, autocast precision, channels-last model and input)
VARIANTS = (("fp32", "fp32", False), ("bf16", "bf16", False), ("bf16+cl", "bf16", True))
BATCH = 4


def mm_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of ``n x n`` matrix products in ``dtype`` (median of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def _step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          precision: str, channels_last: bool) -> None:  # fmt: skip
    if not channels_last and precision != "fp32":
        # forward_logits always converts to channels-last for bf16; time plain NCHW too
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x).float()
    else:
        logits = forward_logits(net, x, precision)
    loss = nn.functional.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_flops(width: int, h: int, w: int) -> float:
    """FLOPs of one training step's forward and backward pass (batch :data:`BATCH`)."""
    net = build_network("fcn8s", "bilinear", 11, width)
    x, y = torch.rand(BATCH, 3, h, w) * 255, torch.randint(0, 11, (BATCH, h, w))
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(net(x), y).backward()
    return float(counter.get_total_flops())


def time_step(width: int, h: int, w: int, variant: tuple, steps: int) -> float:
    """Median seconds of one training step after two warm-up steps."""
    _, precision, channels_last = variant
    torch.manual_seed(0)
    net = build_network("fcn8s", "bilinear", 11, width).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=precision != "fp32" or None)
    x, y = torch.rand(BATCH, 3, h, w) * 255, torch.randint(0, 11, (BATCH, h, w))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        _step(net, opt, x, y, precision, channels_last)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(threads: int = 2, steps: int = 5) -> dict:
    """Every measurement of the module docstring, in one run."""
    torch.set_num_threads(threads)
    result = {
        "cpu": cpu_model(), "threads": threads, "batch": BATCH, "steps": steps,
        "native_bf16": cpu_has_bf16(),
        "mm_gflops": {"fp32": mm_gflops(torch.float32), "bf16": mm_gflops(torch.bfloat16)},
        "cases": [],
    }  # fmt: skip
    variants = VARIANTS if cpu_has_bf16() else VARIANTS[:1]
    for width, h, w in CASES:
        flops = step_flops(width, h, w)
        for variant in variants:
            seconds = time_step(width, h, w, variant, steps)
            gflops = flops / seconds / 1e9
            result["cases"].append({
                "width": width, "crop": [h, w], "variant": variant[0],
                "ms_per_image": 1000 * seconds / BATCH, "gflops": gflops,
                "share_of_bf16_mm": gflops / result["mm_gflops"]["bf16"],
                "step_gflop": flops / 1e9,
            })  # fmt: skip
            log.info("width %d %dx%d %s: %.1f ms/image, %.0f GFLOP/s", width, h, w,
                     variant[0], 1000 * seconds / BATCH, gflops)  # fmt: skip
    return result


def to_markdown(result: dict) -> str:
    mm = result["mm_gflops"]
    best = max((c["share_of_bf16_mm"] for c in result["cases"]), default=0.0)
    lines = [
        "# Training-step speed (FCN-8s)",
        "",
        f"{result['cpu']}, {result['threads']} torch threads, batch {result['batch']}, median "
        f"of {result['steps']} steps after 2 warm-up steps. Same run: `torch.mm` 2048x2048 "
        f"float32 {mm['fp32']:.0f} GFLOP/s, bfloat16 {mm['bf16']:.0f} GFLOP/s.",
        "",
        "| width | crop | variant | ms/image | GFLOP/s | share of bf16 mm | GFLOP per step |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for c in result["cases"]:
        lines.append(
            f"| {c['width']} | {c['crop'][0]}x{c['crop'][1]} | {c['variant']} "
            f"| {c['ms_per_image']:.1f} | {c['gflops']:.0f} | {100 * c['share_of_bf16_mm']:.0f} % "
            f"| {c['step_gflop']:.1f} |"
        )
    goal = "met" if best >= 0.4 else "not met"
    lines += [
        "",
        f"Goal (training at >= 40 % of the bf16 `torch.mm` rate): best {100 * best:.0f} %, {goal}.",
        "",
        "Command: `.venv/bin/python -m deep.train_benchmark`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "benchmarks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run(args.threads, args.steps)
    write_text(args.out / "train.json", json.dumps(result, indent=1))
    write_text(args.out / "train.md", to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
