"""The upsampling study: one table and one figure from the deep configs' rows and checkpoints.

Run after ``segbench run configs/deep_cpu.yaml`` (and/or ``deep_full.yaml``)::

    .venv/bin/python -m deep.upsampling_study

For every successful ``fcn`` row under ``results/rows/<profile>/deep_*`` it reads the test scores
the runner stored, finds the run's checkpoint folder (the same hash :class:`deep.fcn.FCN` uses),
and measures on this machine:

* the checkerboard index (:func:`deep.checkerboard.checkerboard_index`, period 8) of the logits
  on a few validation images at the config's working resolution, averaged;
* inference ms/image at 360x480 on the CPU (median of a few forward passes after a warm-up,
  with ``--threads`` torch threads) and GFLOPs per 360x480 image (torch's FLOP counter:
  convolutions and matrix products; interpolation and pooling are not counted).

It writes ``results/benchmarks/upsampling.json`` and ``.md`` and, per config, a figure of the
same zoomed window of every variant's score map under ``results/figures/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from bench.config import load_config
from bench.datasets import load_splits  # the runner's own split construction: hashes match
from bench.datasets.base import evenly_spaced
from bench.datasets.root import REPO_ROOT
from bench.metrics import paired_bootstrap_diff
from bench.system import cpu_model
from deep.checkerboard import checkerboard_index, zoomed_score_figure
from deep.fcn import FCN, build_network, torch_threads
from deep.train import load_checkpoint

log = logging.getLogger(__name__)

RESULTS = REPO_ROOT / "results"
FULL_SIZE = (360, 480)


def find_rows(results_dir: Path = RESULTS) -> list[tuple[Path, dict]]:
    """(row folder, row) of every successful ``fcn`` row of the ``deep_*`` configs."""
    rows = []
    for path in sorted((results_dir / "rows").glob("*/deep_*/*.json")):
        row = json.loads(path.read_text())
        if row.get("method_name") == "fcn" and row.get("status") == "ok":
            rows.append((path.parent, row))
    return rows


def restore(row_dir: Path, row: dict) -> tuple[FCN, torch.nn.Module, dict, object]:
    """The fitted network of a row (best checkpoint), its meta.json and the val split."""
    cfg = load_config(row_dir / "config.yaml")
    train, val, _ = load_splits(cfg)
    method = FCN(**row["all_params"])
    folder = method.checkpoint_dir(train, val)
    if not (folder / "best.pt").is_file():
        raise FileNotFoundError(f"{row['method']}: no checkpoint {folder}/best.pt (trained here?)")
    meta = json.loads((folder / "meta.json").read_text())
    p = row["all_params"]
    net = build_network(p["arch"], p["upsampling"], meta["n_classes"], p["width"])
    net.load_state_dict(load_checkpoint(folder / "best.pt")["model"])
    return method, net.eval(), meta, val


@torch.no_grad()
def logits_of(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Class scores (C, H, W) of one uint8 image."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return net(x)[0].numpy()


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


def margin(scores: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit: flat inside objects, so a grid pattern stands out."""
    top = np.sort(scores, axis=0)
    return top[-1] - top[-2]


def skip_gaps(found: list[tuple[Path, dict]]) -> list[dict]:
    """Test-mIoU gaps FCN-8s - FCN-16s - FCN-32s (bilinear) with paired 95 % bootstrap CIs.

    Paired: both networks are scored on the same resampled test images (the per-image
    confusion matrices the runner stores beside each row), so an interval that includes 0 says
    the split cannot tell the two apart.
    """
    by_config: dict[tuple[str, str], dict[str, tuple[Path, dict]]] = {}
    for row_dir, row in found:
        if row["all_params"]["upsampling"] == "bilinear":
            key = (row["profile"], row["config"])
            by_config.setdefault(key, {})[row["all_params"]["arch"]] = (row_dir, row)
    gaps = []
    for (profile, config), archs in sorted(by_config.items()):
        for a, b in (("fcn8s", "fcn16s"), ("fcn16s", "fcn32s"), ("fcn8s", "fcn32s")):
            if a not in archs or b not in archs:
                continue
            (dir_a, row_a), (dir_b, row_b) = archs[a], archs[b]
            with (
                np.load(dir_a / f"{row_a['method']}.cm.npz") as fa,
                np.load(dir_b / f"{row_b['method']}.cm.npz") as fb,
            ):
                low, high = paired_bootstrap_diff(
                    fa["per_image"], fb["per_image"], seed=int(row_a.get("seed") or 0)
                )
            gaps.append({
                "profile": profile, "config": config, "a": row_a["method"], "b": row_b["method"],
                "gap": row_a["miou"] - row_b["miou"], "low": low, "high": high,
            })  # fmt: skip
    return gaps


def study(n_images: int = 8, threads: int = 1, results_dir: Path = RESULTS) -> list[dict]:
    """Measure every fcn row (see the module docstring); returns the table's entries."""
    entries, figures = [], {}
    for row_dir, row in tqdm(find_rows(results_dir), desc="upsampling study", unit="model"):
        try:
            _, net, meta, val = restore(row_dir, row)
        except FileNotFoundError as exc:
            log.warning("%s", exc)
            continue
        with torch_threads(threads):
            picks = evenly_spaced(len(val), n_images)
            scores = [logits_of(net, val.image(int(i))) for i in picks]
            ms = cpu_ms_per_image(net)
            gflops = gflops_per_image(net)
        history = meta["result"]["history"]
        best = meta["result"]["best_epoch"]
        p = row["all_params"]
        entry = {
            "config": row["config"],
            "profile": row["profile"],
            "method": row["method"],
            "arch": p["arch"],
            "upsampling": p["upsampling"],
            "resolution": row["resolution"],
            "test_miou": row["miou"],
            "test_mean_acc": row["mean_acc"],
            "val_miou": history[best]["val_miou"] if 0 <= best < len(history) else None,
            "best_epoch": best,
            "epochs": p["epochs"],
            "checkerboard": float(np.mean([checkerboard_index(s) for s in scores])),
            "cpu_ms_360x480": ms,
            "gflops_360x480": gflops,
            "train_s": meta["result"]["train_seconds"],
            "fit_s": row["fit_s"],
            "device": meta["result"]["device"],
        }
        entries.append(entry)
        key = (row["profile"], row["config"])
        figures.setdefault(key, {})[f"{row['method']} ({entry['checkerboard']:.4f})"] = margin(
            scores[0]
        )
    for (profile, config), maps in figures.items():
        h, w = next(iter(maps.values())).shape
        size = min(32, h, w)
        path = results_dir / "figures" / f"upsampling_{profile}_{config}.png"
        zoomed_score_figure(
            maps,
            path,
            box=((h - size) // 2, (w - size) // 2, size),
            title=f"{config}: top-1 minus top-2 logit,\ncentral {size}x{size} window "
            "(checkerboard index)",
        )
        log.info("figure %s", path)
    return entries


def noise_floor_lines(entries: list[dict]) -> list[str]:
    """The gap between ``transposed3`` and ``bed_of_nails_conv`` rows of the same config.

    The two layers compute the same function (zero insertion then a 3x3 convolution) and
    start from the same weights, so whatever separates their test scores is training noise
    (floating-point order in two different kernels, amplified by SGD): the smallest gap
    between variants that a single run per variant can resolve.
    """
    by_config: dict[str, dict[str, dict]] = {}
    for e in entries:
        by_config.setdefault(e["config"], {})[e["upsampling"]] = e
    lines = []
    for config, ups in sorted(by_config.items()):
        if "transposed3" in ups and "bed_of_nails_conv" in ups:
            a, b = ups["transposed3"], ups["bed_of_nails_conv"]
            lines.append(
                f"| {config} | {a['method']} vs {b['method']} | "
                f"{100 * abs(a['test_miou'] - b['test_miou']):.1f} |"
            )
    if not lines:
        return []
    return [
        "",
        "## Noise floor of one training run",
        "",
        "`transposed3` and `bed_of_nails_conv` are the same layer written two ways and the "
        "networks start from identical weights (tested), so the gap between their test mIoU is "
        "training noise alone: variants closer than this are not ordered by one run each.",
        "",
        "| config | pair | test mIoU gap (points) |",
        "|---|---|---:|",
        *lines,
    ]


def to_markdown(entries: list[dict], threads: int, gaps: list[dict] | None = None) -> str:
    """The study as a Markdown table."""
    lines = [
        "# Upsampling study",
        "",
        "Test mIoU and class-average accuracy from the runner's rows; val mIoU of the selected "
        "epoch; checkerboard index (0 = none; see `deep/checkerboard.py`) of the logits on 8 "
        f"val images; CPU ms/image and GFLOPs at 360x480 on {cpu_model()} with {threads} torch "
        "thread(s); train time = the training loop (train + per-epoch validation).",
        "",
        "| config | row | upsampling | test mIoU % | test class acc % | val mIoU % | "
        "checkerboard | ms/image (CPU) | GFLOPs | train s | profile | device |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for e in entries:
        val = "" if e["val_miou"] is None else f"{100 * e['val_miou']:.1f}"
        lines.append(
            f"| {e['config']} | {e['method']} | {e['upsampling']} | {100 * e['test_miou']:.1f} "
            f"| {100 * e['test_mean_acc']:.1f} | {val} | {e['checkerboard']:.4f} "
            f"| {e['cpu_ms_360x480']:.0f} | {e['gflops_360x480']:.2f} | {e['train_s']:.0f} "
            f"| {e['profile']} | {e['device']} |"
        )
    if gaps:
        lines += [
            "",
            "## Skip connections: paired test-mIoU gaps",
            "",
            "Bilinear decoders; 95 % paired bootstrap over test images (1000 resamples). An "
            "interval containing 0 means the test split cannot order the two.",
            "",
            "| config | gap | points | 95 % CI |",
            "|---|---|---:|---|",
        ]
        for g in gaps:
            lines.append(
                f"| {g['config']} | {g['a']} - {g['b']} | {100 * g['gap']:+.1f} "
                f"| [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}] |"
            )
    lines += noise_floor_lines(entries)
    lines += ["", "Command: `.venv/bin/python -m deep.upsampling_study`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8, help="val images for the metric")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for timing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    entries = study(args.images, args.threads)
    gaps = skip_gaps(find_rows())
    if not entries:
        raise SystemExit("no fcn rows with checkpoints found: run configs/deep_cpu.yaml first")
    out = RESULTS / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    payload = {"cpu": cpu_model(), "threads": args.threads, "entries": entries, "skip_gaps": gaps}
    (out / "upsampling.json").write_text(json.dumps(payload, indent=1))
    (out / "upsampling.md").write_text(to_markdown(entries, args.threads, gaps))
    log.info("wrote %s and .md (%d rows)", out / "upsampling.json", len(entries))


if __name__ == "__main__":
    main()
