"""Training-step speed of FCN-8s in float32, bf16 autocast and bf16 + channels-last.

    .venv/bin/python -m deep.train_benchmark [--threads 2] [--steps 5]

In one run it measures

1. the reference rates of a 2048x2048 ``torch.mm`` in float32 and in bfloat16;
2. for FCN-8s (bilinear decoder, 11 classes, batch 4) at widths 8, 16 and 32, the milliseconds
   per image of one full training step (forward, float32 cross-entropy, backward, AdamW step)
   and its achieved GFLOP/s, for three variants:

   * ``fp32``: what :func:`deep.train.train` runs with ``precision="fp32"`` (NCHW, per-tensor
     AdamW);
   * ``bf16``: bfloat16 autocast on NCHW tensors (fused AdamW), an ablation;
   * ``bf16+cl``: what ``train`` runs with ``precision="bf16"`` (autocast, channels-last model
     and inputs, fused AdamW: :func:`~deep.train.forward_logits`,
     :func:`~deep.train.make_optimizer`).

   Width 8 is timed on 96x128 crops (what ``configs/deep_cpu.yaml`` trains on), widths 16 and
   32 on 288x384 crops (``configs/deep_device.yaml``). Each variant gets two warm-up steps, then
   the variants take turns step by step (so a change in the machine's load hits all three
   alike) and the median of ``--steps`` steps is kept. FLOPs are those of one forward and
   backward pass counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions
   and matrix products; batch norm, pooling, interpolation and the optimiser are not
   counted), and each rate is also given as a share of the bfloat16 ``torch.mm`` rate, timed
   again right before each width (on a shared machine the load drifts within a run): the goal
   is training at 40 % of it or more;
3. the parity of the two arithmetics: the float32 network after its timed steps, in eval mode,
   scores the same synthetic images in float32 and in bf16 + channels-last; the relative L2
   error of the logits and the share of pixels whose label agrees are reported.

Results go to ``results/benchmarks/train.json`` and ``train.md``, with the load average at
the start and the end of the run (other processes on the machine slow every number down).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.datasets import Synthetic
from bench.datasets.root import REPO_ROOT
from bench.rows import write_text
from bench.system import environment
from deep.fcn import build_network
from deep.train import TrainConfig, cpu_has_bf16, forward_logits, make_optimizer

log = logging.getLogger(__name__)

OUT_DIR = REPO_ROOT / "results" / "benchmarks"
#: (width, crop H, crop W) of the timed networks.
CASES = ((8, 96, 128), (16, 288, 384), (32, 288, 384))
#: name -> (resolved precision, channels-last model and inputs)
VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+cl": ("bf16", True)}
#: The variant deep.train runs when the precision resolves to bf16.
TRAIN_VARIANT = "bf16+cl"
BATCH = 4
N_CLASSES = 11
#: Share of the bf16 torch.mm rate that training should reach.
GOAL = 0.4
WARMUP = 2
#: Side of the square matrices of the reference torch.mm.
MM_N = 2048


def mm_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an ``n x n`` by ``n x n`` ``torch.mm`` in ``dtype`` (2 n^3 flops), median."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.mm(a, b)  # warm-up: oneDNN picks and packs its kernel on the first calls
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


class Trainer:
    """One network and optimiser of a variant, and its training step on a fixed batch."""

    def __init__(self, width: int, variant: str, x: torch.Tensor, y: torch.Tensor) -> None:
        self.precision, self.channels_last = VARIANTS[variant]
        torch.manual_seed(0)  # every variant starts from the same weights
        self.net = build_network("fcn8s", "bilinear", N_CLASSES, width).train()
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.net, TrainConfig(), self.precision)
        self.criterion = nn.CrossEntropyLoss(ignore_index=N_CLASSES)
        self.x, self.y = x, y
        self.seconds: list[float] = []

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp32" or self.channels_last:
            return forward_logits(self.net, x, self.precision)
        # forward_logits always goes channels-last for bf16: the NCHW ablation is written out
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.net(x).float()

    def step(self, timed: bool = True) -> None:
        t0 = time.perf_counter()
        loss = self.criterion(self.logits(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        loss.item()
        if timed:
            self.seconds.append(time.perf_counter() - t0)


def step_flops(width: int, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward and backward pass of a training step (FlopCounterMode's count)."""
    net = build_network("fcn8s", "bilinear", N_CLASSES, width).train()
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(net(x), y, ignore_index=N_CLASSES).backward()
    return counter.get_total_flops()


@torch.no_grad()
def parity(net: nn.Module, h: int, w: int) -> dict[str, float]:
    """Float32 against bf16 + channels-last logits of the same weights on synthetic images."""
    data = Synthetic("test", n_images=BATCH, size=(h, w))
    images = torch.stack([torch.from_numpy(data.image(i)) for i in range(BATCH)])
    x = images.permute(0, 3, 1, 2).float()
    net.eval()
    ref = forward_logits(net, x, "fp32")
    low = forward_logits(net, x, "bf16")
    net.train()
    return {
        "logits_rel_l2": float((low - ref).norm() / ref.norm()),
        "logits_max_abs_over_std": float((low - ref).abs().max() / ref.std()),
        "argmax_agreement": float((low.argmax(1) == ref.argmax(1)).float().mean()),
    }


def run(threads: int = 2, steps: int = 5) -> dict:
    """Every measurement of the module docstring, in one run; what goes into the JSON file."""
    torch.set_num_threads(threads)
    load_start = os.getloadavg()
    bf16 = cpu_has_bf16()
    mm = {"fp32": mm_gflops(torch.float32, MM_N), "bf16": mm_gflops(torch.bfloat16, MM_N)}
    log.info("torch.mm %d: float32 %.0f, bfloat16 %.0f GFLOP/s", MM_N, mm["fp32"], mm["bf16"])
    # without native bf16 the bf16 variants are emulated and slower than float32: not timed
    variants = list(VARIANTS) if bf16 else ["fp32"]
    cases = []
    for width, h, w in CASES:
        gen = torch.Generator().manual_seed(width)
        x = torch.rand(BATCH, 3, h, w, generator=gen) * 255
        y = torch.randint(0, N_CLASSES + 1, (BATCH, h, w), generator=gen)  # N_CLASSES = void
        flops = step_flops(width, x, y)
        mm_here = mm_gflops(torch.bfloat16, MM_N)
        trainers = {v: Trainer(width, v, x, y) for v in variants}
        for trainer in trainers.values():
            for _ in range(WARMUP):
                trainer.step(timed=False)
        for _ in range(steps):
            for trainer in trainers.values():  # in turns: load drift hits every variant alike
                trainer.step()
        for name, trainer in trainers.items():
            seconds = statistics.median(trainer.seconds)
            gflops = flops / seconds / 1e9
            cases.append(
                {
                    "width": width,
                    "crop": [h, w],
                    "variant": name,
                    "ms_per_image": 1000 * seconds / BATCH,
                    "ms_per_step_all": [1000 * s for s in trainer.seconds],
                    "step_gflop": flops / 1e9,
                    "gflops": gflops,
                    "bf16_mm_gflops_before": mm_here,
                    "share_of_bf16_mm": gflops / mm_here,
                }
            )
            log.info(
                "width %d %dx%d %s: %.1f ms/image, %.0f GFLOP/s (%.0f %% of bf16 mm)",
                *(width, h, w, name, 1000 * seconds / BATCH, gflops, 100 * gflops / mm_here),
            )
        if bf16:
            cases[-1]["parity"] = parity(trainers["fp32"].net, h, w)
            log.info("width %d parity %s", width, cases[-1]["parity"])
    return {
        "native_bf16": bf16,
        "threads": threads,
        "batch": BATCH,
        "steps": steps,
        "warmup_steps": WARMUP,
        "flop_counting": "torch.utils.flop_counter.FlopCounterMode, forward + backward",
        "torch_mm_gflops": mm,
        "goal_share_of_bf16_mm": GOAL,
        "train_variant": TRAIN_VARIANT,
        "cases": cases,
        "load_average_1_5_15_min": {"start": load_start, "end": os.getloadavg()},
    }


def to_markdown(result: dict) -> str:
    """The human-readable tables of ``result``."""
    mm = result["torch_mm_gflops"]
    load = result["load_average_1_5_15_min"]
    cases = result["cases"]
    lines = [
        "# Training-step speed of FCN-8s: float32, bf16 autocast, bf16 + channels-last",
        "",
        f"{result['environment']['cpu']}, {result['threads']} torch threads, batch "
        f"{result['batch']}; one step = forward, float32 loss, backward, AdamW step; median of "
        f"{result['steps']} steps after {result['warmup_steps']} warm-up steps, variants in "
        f"turns. Same run: `torch.mm` 2048x2048 float32 {mm['fp32']:.0f} GFLOP/s, bfloat16 "
        f"{mm['bf16']:.0f} GFLOP/s (each width's share uses the bf16 rate timed right before it: "
        "column 'bf16 mm'). FLOPs: "
        f"{result['flop_counting']} (convolutions and matrix products only). Load average "
        f"(1 min) {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at the end on "
        f"{result['environment']['cpu_count']} cores.",
        "",
        "| width | crop | variant | ms/image | speed-up vs fp32 | GFLOP/step | GFLOP/s "
        "| bf16 mm | share of bf16 mm |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    fp32_ms = {c["width"]: c["ms_per_image"] for c in cases if c["variant"] == "fp32"}
    for c in cases:
        lines.append(
            f"| {c['width']} | {c['crop'][0]}x{c['crop'][1]} | {c['variant']} "
            f"| {c['ms_per_image']:.1f} | {fp32_ms[c['width']] / c['ms_per_image']:.2f}x "
            f"| {c['step_gflop']:.1f} | {c['gflops']:.0f} | {c['bf16_mm_gflops_before']:.0f} "
            f"| {100 * c['share_of_bf16_mm']:.0f} % |"
        )
    goal = result["goal_share_of_bf16_mm"]
    ours = [c for c in cases if c["variant"] == result["train_variant"]]
    if ours:
        verdict = ", ".join(
            f"width {c['width']} {100 * c['share_of_bf16_mm']:.0f} % "
            f"({'met' if c['share_of_bf16_mm'] >= goal else 'not met'})"
            for c in ours
        )
        lines += [
            "",
            f"Goal, training at >= {100 * goal:.0f} % of the bf16 `torch.mm` rate with what "
            f"`deep/train.py` runs ({result['train_variant']}): {verdict}.",
        ]
    parities = [c for c in cases if "parity" in c]
    if parities:
        lines += [
            "",
            "Parity: the float32 network after its timed steps, eval mode, on "
            f"{result['batch']} synthetic images, float32 against bf16 + channels-last logits:",
            "",
            "| width | size | logits rel. L2 error | max abs error / std | labels agreeing |",
            "|---:|---|---:|---:|---:|",
        ]
        for c in parities:
            p = c["parity"]
            lines.append(
                f"| {c['width']} | {c['crop'][0]}x{c['crop'][1]} | {p['logits_rel_l2']:.2e} "
                f"| {p['logits_max_abs_over_std']:.3f} | {100 * p['argmax_agreement']:.2f} % |"
            )
    noisy = [c for c in cases if max(c["ms_per_step_all"]) > 2 * min(c["ms_per_step_all"])]
    if noisy:
        names = ", ".join(f"width {c['width']} {c['variant']}" for c in noisy)
        lines += [
            "",
            f"Noisy: the step times of {names} vary by more than 2x within the run (all of "
            "them are in `train.json`): other processes took the cores, so those rows are "
            "upper bounds of the time, not the speed of the code.",
        ]
    lines += ["", f"Command: `{result['command']}`", "", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in result["environment"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder of train.{json,md}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    result = run(args.threads, args.steps)
    argv_used = sys.argv[1:] if argv is None else argv
    result["command"] = shlex.join([".venv/bin/python", "-m", "deep.train_benchmark", *argv_used])
    result["environment"] = environment(REPO_ROOT)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "train.json", json.dumps(result, indent=1))
    write_text(args.out / "train.md", to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
