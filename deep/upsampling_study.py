"""The upsampling study: one table and one figure from the deep configs' rows alone.

Run after ``segbench run configs/deep_cpu.yaml`` (``make bench`` does both)::

    .venv/bin/python -m deep.upsampling_study [--store runs/results] [--config CONFIG ...]

With ``--config``, the config is run first through the runner, which trains only what has no
row yet (every finished row is reused), so the study never depends on checkpoints that only
the machine that trained them has. Then, for every successful ``fcn`` row of the ``deep_*``
configs of the store, it takes from the row:

* the test scores, per seed, and their mean and standard deviation over seeds;
* the checkerboard index (:func:`deep.checkerboard.checkerboard_index`, period 8) of the logits
  on a few val images, which :class:`deep.fcn.FCN` measures at the end of ``fit``;
* the zoomed margin map of one val image (the figure);

and measures on this machine, per architecture, inference ms/image at 360x480 on the CPU
(median of a few forward passes after a warm-up, ``--threads`` torch threads) and GFLOPs per
360x480 image (torch's FLOP counter: convolutions and matrix products). Both depend on the
layers, not on the weights' values, so freshly initialised networks of the row's parameters
are timed.

It writes ``<store>/benchmarks/upsampling.json`` and ``.md`` and, per config, a figure
``<store>/figures/upsampling_<profile>_<config>.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.metrics import BLOCK_LENGTH, paired_bootstrap_diff
from bench.rows import load_rows, row_stem, write_text
from bench.system import cpu_model
from deep.checkerboard import zoomed_score_figure
from deep.fcn import build_network, torch_threads

log = logging.getLogger(__name__)

FULL_SIZE = (360, 480)


def find_rows(store: Path) -> list[dict]:
    """Every successful ``fcn`` row of the ``deep_*`` configs of ``store``."""
    return [
        r
        for r in load_rows(store)
        if r.get("method_name") == "fcn" and r["status"] == "ok" and r["config"].startswith("deep_")
    ]


def cpu_ms_per_image(net: torch.nn.Module, repeats: int = 5) -> float:
    """Median ms of a 360x480 forward pass (after one warm-up), softmax included."""
    x = torch.rand(1, 3, *FULL_SIZE) * 255
    times = []
    with torch.no_grad():
        torch.softmax(net(x), dim=1)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.softmax(net(x), dim=1)
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def gflops_per_image(net: torch.nn.Module) -> float:
    """GFLOPs (2 per multiply-add) of one 360x480 forward pass."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, *FULL_SIZE))
    return counter.get_total_flops() / 1e9


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN with one value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def _load_cm(store: Path, row: dict) -> dict[str, np.ndarray]:
    folder = store / Path(row["row_file"]).parent
    with np.load(folder / f"{row_stem(row['method'], row['seed'])}.cm.npz") as f:
        return {k: f[k] for k in f.files}


def skip_gaps(rows: list[dict], store: Path) -> list[dict]:
    """Test-mIoU gaps FCN-8s - 16s - 32s (bilinear) per seed, with paired block-bootstrap CIs.

    Paired: both networks of one seed are scored on the same resampled test frames (blocks of
    consecutive frames within each sequence), so an interval containing 0 says the test split
    cannot order that pair of trained networks; the spread of the gap over seeds is what
    training adds on top.
    """
    by_key: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        if row["all_params"]["upsampling"] == "bilinear":
            key = (row["profile"], row["config"], row["seed"])
            by_key[key][row["all_params"]["arch"]] = row
    gaps = []
    for (profile, config, seed), archs in sorted(by_key.items()):
        for a, b in (("fcn8s", "fcn16s"), ("fcn16s", "fcn32s"), ("fcn8s", "fcn32s")):
            if a not in archs or b not in archs:
                continue
            fa, fb = _load_cm(store, archs[a]), _load_cm(store, archs[b])
            groups = list(fa["groups"]) if "groups" in fa else None
            low, high = paired_bootstrap_diff(
                fa["per_image"], fb["per_image"], seed=seed, groups=groups,
                block_length=int((archs[a].get("ci") or {}).get("block_length", 1)),
            )  # fmt: skip
            gaps.append({
                "profile": profile, "config": config, "seed": seed, "a": archs[a]["method"],
                "b": archs[b]["method"], "gap": archs[a]["miou"] - archs[b]["miou"],
                "low": low, "high": high,
            })  # fmt: skip
    return gaps


def summarise_gaps(gaps: list[dict]) -> list[dict]:
    """Per (config, pair): mean and sd of the gap over seeds, and how many intervals exclude 0."""
    by_pair: dict[tuple, list[dict]] = defaultdict(list)
    for g in gaps:
        by_pair[(g["config"], g["a"], g["b"])].append(g)
    out = []
    for (config, a, b), items in sorted(by_pair.items()):
        mean, sd = _mean_sd([g["gap"] for g in items])
        out.append({
            "config": config, "a": a, "b": b, "n_seeds": len(items), "mean": mean, "sd": sd,
            "above": sum(g["low"] > 0 for g in items), "below": sum(g["high"] < 0 for g in items),
        })  # fmt: skip
    return out


def study(store: Path, threads: int = 1) -> list[dict]:
    """One entry per (config, method) with per-seed values and their mean/sd; writes figures."""
    rows = find_rows(store)
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["profile"], row["config"], row["method"])].append(row)
    speed: dict[tuple, tuple[float, float]] = {}
    entries, figures = [], defaultdict(dict)
    for (profile, config, method), items in sorted(grouped.items()):
        items.sort(key=lambda r: r["seed"])
        p = items[0]["all_params"]
        arch_key = (p["arch"], p["upsampling"], p["width"])
        if arch_key not in speed:
            net = build_network(p["arch"], p["upsampling"], len(items[0]["class_names"]),
                                p["width"]).eval()  # fmt: skip
            with torch_threads(threads):
                speed[arch_key] = (cpu_ms_per_image(net), gflops_per_image(net))
        summaries = [r.get("fit_summary") or {} for r in items]
        boards = [float(s.get("checkerboard", float("nan"))) for s in summaries]
        best_vals = []
        for s in summaries:
            history, best = s.get("history") or [], s.get("best_epoch", -1)
            if 0 <= best < len(history) and "val_miou" in history[best]:
                best_vals.append(history[best]["val_miou"])
        miou_mean, miou_sd = _mean_sd([r["miou"] for r in items])
        board_mean, board_sd = _mean_sd(boards)
        entry = {
            "config": config, "profile": profile, "method": method, "arch": p["arch"],
            "upsampling": p["upsampling"], "resolution": items[0]["resolution"],
            "seeds": [r["seed"] for r in items],
            "test_miou": [r["miou"] for r in items], "test_miou_mean": miou_mean,
            "test_miou_sd": miou_sd,
            "test_mean_acc_mean": _mean_sd([r["mean_acc"] for r in items])[0],
            "val_miou_mean": _mean_sd(best_vals)[0] if best_vals else None,
            "checkerboard": boards, "checkerboard_mean": board_mean, "checkerboard_sd": board_sd,
            "epochs": p["epochs"],
            "cpu_ms_360x480": speed[arch_key][0], "gflops_360x480": speed[arch_key][1],
            "train_s_mean": _mean_sd([float(s.get("train_seconds", float("nan")))
                                      for s in summaries])[0],
            "final_loss": [
                float((s.get("history") or [{}])[-1].get("loss", float("nan"))) for s in summaries
            ],
            "n_classes": len(items[0]["class_names"]),
            "precision": items[0].get("precision", "fp32"),
            "device": (items[0].get("environment") or {}).get("device", "cpu"),
        }  # fmt: skip
        entries.append(entry)
        window = summaries[0].get("checkerboard_window")
        if window:
            label = f"{method} ({boards[0]:.4f})"
            figures[(profile, config)][label] = np.asarray(window, dtype=np.float32)
    for (profile, config), maps in figures.items():
        path = store / "figures" / f"upsampling_{profile}_{config}.png"
        size = next(iter(maps.values())).shape[0]
        zoomed_score_figure(
            maps, path, box=(0, 0, size),
            title=f"{config}: top-1 minus top-2 logit, seed {min(entries[0]['seeds'])},\n"
            f"central {size}x{size} window of one val image (checkerboard index)",
        )  # fmt: skip
        log.info("figure %s", path)
    return entries


def noise_floor_lines(entries: list[dict]) -> list[str]:
    """Gaps between ``transposed3`` and ``bed_of_nails_conv``, and the seed spread.

    The two layers compute the same function (zero insertion then a 3x3 convolution) and
    start from the same weights, so whatever separates their test scores is training noise
    (floating-point order in two different kernels, amplified by training); the standard
    deviation over seeds of every variant measures the same noise directly.
    """
    by_config: dict[str, dict[str, dict]] = defaultdict(dict)
    for e in entries:
        by_config[e["config"]][e["upsampling"]] = e
    lines = []
    for config, ups in sorted(by_config.items()):
        sds = [e["test_miou_sd"] for e in ups.values() if np.isfinite(e["test_miou_sd"])]
        typical = f"{100 * float(np.median(sds)):.1f}" if sds else "-"
        pair = "-"
        if "transposed3" in ups and "bed_of_nails_conv" in ups:
            a, b = ups["transposed3"], ups["bed_of_nails_conv"]
            per_seed = [abs(x - y) for x, y in zip(a["test_miou"], b["test_miou"], strict=False)]
            pair = ", ".join(f"{100 * g:.1f}" for g in per_seed)
        lines.append(f"| {config} | {pair} | {typical} |")
    if not lines:
        return []
    return [
        "",
        "## Noise floor of training",
        "",
        "`transposed3` and `bed_of_nails_conv` are the same layer written two ways, started "
        "from identical weights (tested): the gap between their test mIoU, per seed, is "
        "training noise alone. The median standard deviation over seeds of all variants "
        "measures it directly: variants closer than about two such deviations are not ordered.",
        "",
        "| config | same-function gap per seed (points) | median seed sd (points) |",
        "|---|---|---:|",
        *lines,
    ]


def stuck_lines(entries: list[dict], margin: float = 0.03) -> list[str]:
    """Variants whose training loss never left ln C (C classes) for any seed: they learnt nothing.

    A bare sparse layer (bed of nails, max-unpooling) used for the last three x2 steps of FCN-8s
    leaves 63 of every 64 output pixels at exactly zero logits: there the per-pixel loss is ln C
    whatever the weights and no gradient flows, so the mean loss cannot fall much below
    (63/64) ln C and the prediction is the argmax of zeros, class 0, nearly everywhere. That is
    a property of the decoder, not a failed run, and why SegNet follows each unpooling with a
    convolution (the ``*_conv`` variants).
    """
    stuck = []
    for e in entries:
        losses = [x for x in e.get("final_loss", []) if np.isfinite(x)]
        floor = math.log(e.get("n_classes") or 2)
        if losses and all(x >= (1 - margin) * floor for x in losses):
            stuck.append((e, losses, floor))
    if not stuck:
        return []
    rows = [
        f"| {e['config']} | {e['method']} | {', '.join(f'{x:.3f}' for x in losses)} | "
        f"{floor:.3f} | {_pm(e['test_miou_mean'], e['test_miou_sd'])} |"
        for e, losses, floor in stuck
    ]
    return [
        "",
        "## Variants that learnt nothing",
        "",
        "Their last-epoch training loss stayed within 3 % of ln C (the loss of all-zero "
        "logits) for every seed. A bare sparse layer (bed of nails, max-unpooling) as the last "
        "three x2 steps of FCN-8s leaves 63 of every 64 output pixels at zero logits: no "
        "gradient flows there, the loss cannot fall much below (63/64) ln C, and the prediction "
        "is class 0 nearly everywhere. A property of the decoder, not a failed run: it is why "
        "SegNet follows each unpooling with a convolution (the `*_conv` variants above).",
        "",
        "| config | method | last-epoch loss per seed | ln C | test mIoU % (mean ± sd) |",
        "|---|---|---|---:|---:|",
        *rows,
    ]


def _pm(mean: float, sd: float, scale: float = 100.0, digits: int = 1) -> str:
    if not np.isfinite(sd):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}"


def to_markdown(entries: list[dict], threads: int, gaps: list[dict] | None = None) -> str:
    """The study as Markdown: the variants over seeds, skip gaps, noise floor."""
    lines = [
        "# Upsampling study",
        "",
        "Test mIoU (mean ± standard deviation over seeds) and class-average accuracy from the "
        "runner's rows; val mIoU of the selected epoch; checkerboard index (0 = none; see "
        "`deep/checkerboard.py`) of the logits on 8 val images, mean ± sd over seeds; CPU "
        f"ms/image and GFLOPs at 360x480 on {cpu_model()} with {threads} torch thread(s); "
        "train s = the training loop (train + per-epoch validation), mean over seeds.",
        "",
        "| config | row | upsampling | seeds | test mIoU % | test class acc % | val mIoU % | "
        "checkerboard | ms/image (CPU) | GFLOPs | train s | precision |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in sorted(entries, key=lambda e: (e["config"], -e["test_miou_mean"])):
        val = "" if e["val_miou_mean"] is None else f"{100 * e['val_miou_mean']:.1f}"
        lines.append(
            f"| {e['config']} | {e['method']} | {e['upsampling']} | {len(e['seeds'])} "
            f"| {_pm(e['test_miou_mean'], e['test_miou_sd'])} "
            f"| {100 * e['test_mean_acc_mean']:.1f} | {val} "
            f"| {_pm(e['checkerboard_mean'], e['checkerboard_sd'], 1.0, 4)} "
            f"| {e['cpu_ms_360x480']:.0f} | {e['gflops_360x480']:.2f} | {e['train_s_mean']:.0f} "
            f"| {e['precision']} |"
        )
    if gaps:
        lines += [
            "",
            "## Skip connections: paired test-mIoU gaps over seeds",
            "",
            "Bilinear decoders. Per seed, a 95 % paired moving-block bootstrap over test frames "
            f"(blocks of {BLOCK_LENGTH} consecutive frames within each sequence): it covers "
            "which test frames were filmed, not training variance; the mean ± sd over seeds "
            "covers training variance. 'above 0' counts the seeds whose interval excludes 0 "
            "in favour of the first network.",
            "",
            "| config | gap | seeds | points, mean ± sd | per seed [95 % CI] | above 0 | below 0 |",
            "|---|---|---:|---:|---|---:|---:|",
        ]
        for sgap in summarise_gaps(gaps):
            per_seed = "; ".join(
                f"{100 * g['gap']:+.1f} [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}]"
                for g in gaps
                if (g["config"], g["a"], g["b"]) == (sgap["config"], sgap["a"], sgap["b"])
            )
            lines.append(
                f"| {sgap['config']} | {sgap['a']} - {sgap['b']} | {sgap['n_seeds']} "
                f"| {_pm(sgap['mean'], sgap['sd'])} | {per_seed} | {sgap['above']} "
                f"| {sgap['below']} |"
            )
    lines += noise_floor_lines(entries)
    lines += stuck_lines(entries)
    lines += ["", "Command: `.venv/bin/python -m deep.upsampling_study --config "
              "configs/deep_cpu.yaml` (part of `make bench`)", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.config import load_config
    from bench.errors import SegbenchError
    from bench.runner import LOCAL_DIR, run_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=LOCAL_DIR, help="results store")
    parser.add_argument(
        "--config", action="append", default=[],
        help="run this config first (only rows it lacks are computed)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for timing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        for path in args.config:
            run_config(load_config(path), results_dir=args.store)
        entries = study(args.store, args.threads)
        if not entries:
            raise SegbenchError(
                f"{args.store}: no fcn rows of a deep_* config; run "
                "`python -m deep.upsampling_study --config configs/deep_cpu.yaml`"
            )
        gaps = skip_gaps(find_rows(args.store), args.store)
    except SegbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.store / "benchmarks"
    payload = {"cpu": cpu_model(), "threads": args.threads, "entries": entries, "skip_gaps": gaps}
    write_text(out / "upsampling.json", json.dumps(payload, indent=1))
    write_text(out / "upsampling.md", to_markdown(entries, args.threads, gaps))
    log.info("wrote %s and .md (%d rows)", out / "upsampling.json", len(entries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
