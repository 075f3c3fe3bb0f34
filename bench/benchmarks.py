"""Benchmarks of the harness itself: evaluator throughput and CamVid decoding time.

Speed claims are measured here, side by side in one process, never asserted by timed unit
tests. Results go to ``results/benchmarks/<name>.json`` and ``.md`` with the machine they ran on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.datasets.root import REPO_ROOT
from bench.metrics import confusion_matrix
from bench.system import environment

log = logging.getLogger(__name__)
OUT_DIR = REPO_ROOT / "results" / "benchmarks"


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def evaluator_throughput(
    data_root: str | None = None, n_images: int = 20, repeats: int = 5
) -> dict:
    """Megapixels/s of four ways to build the confusion matrix of the same predictions.

    Inputs are real CamVid test labels (360x480, void included) and predictions made by
    corrupting 30 % of their pixels, so that the matrix is realistic (mostly diagonal, void
    pixels to ignore). All four implementations must agree before any time is reported.
    """
    import torch
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix
    from torchmetrics.classification import MulticlassConfusionMatrix

    from bench.datasets import CamVid

    ds = CamVid("test", root=data_root, subset=n_images)
    c, ignore = ds.n_classes, ds.ignore_index
    rng = np.random.default_rng(0)
    gts = np.stack([ds.native_label(i) for i in range(len(ds))])
    preds = np.where(gts == ignore, 0, gts).astype(np.uint8)
    noise = rng.random(gts.shape) < 0.3
    preds[noise] = rng.integers(0, c, noise.sum())
    megapixels = gts.size / 1e6

    def ours() -> np.ndarray:
        total = np.zeros((c, c), np.int64)
        for p, g in zip(preds, gts, strict=True):
            total += confusion_matrix(p, g, c, ignore)
        return total

    def bincount() -> np.ndarray:
        # the idiom of torchvision's segmentation reference and mmsegmentation: mask, then
        # np.bincount(n * gt + pred); the peer the evaluator has to match or beat
        total = np.zeros((c, c), np.int64)
        for p, g in zip(preds, gts, strict=True):
            keep = g != ignore
            index = c * g[keep].astype(np.int64) + p[keep]
            total += np.bincount(index, minlength=c * c).reshape(c, c)
        return total

    def sklearn() -> np.ndarray:
        total = np.zeros((c, c), np.int64)
        for p, g in zip(preds, gts, strict=True):
            keep = g != ignore
            total += sk_confusion_matrix(g[keep], p[keep], labels=np.arange(c))
        return total

    metric = MulticlassConfusionMatrix(num_classes=c, ignore_index=ignore, validate_args=True)
    tpreds, tgts = torch.from_numpy(preds.astype(np.int64)), torch.from_numpy(gts.astype(np.int64))

    def torchmetrics() -> np.ndarray:
        metric.reset()
        for p, g in zip(tpreds, tgts, strict=True):
            metric.update(p, g)
        return metric.compute().numpy()

    reference = ours()
    for name, fn in (("bincount", bincount), ("sklearn", sklearn), ("torchmetrics", torchmetrics)):
        if not np.array_equal(fn(), reference):
            raise AssertionError(f"{name} disagrees with bench.metrics; no timing reported")
    result = {"n_images": len(ds), "megapixels": megapixels, "repeats": repeats, "mpix_per_s": {}}
    peers = (("bincount", bincount), ("sklearn", sklearn), ("torchmetrics", torchmetrics))
    for name, fn in (("segbench", ours), *peers):
        seconds = _best_of(fn, repeats)
        result["mpix_per_s"][name] = megapixels / seconds
        log.info("%-12s %8.1f Mpixel/s", name, megapixels / seconds)
    result["torch_threads"] = torch.get_num_threads()
    return result


def decode_time(data_root: str | None = None, repeats: int = 3) -> dict:
    """Seconds to decode every image and label of the CamVid test split (PNG -> NumPy)."""
    from bench.datasets import CamVid

    ds = CamVid("test", root=data_root)

    def decode_all() -> None:
        for i in range(len(ds)):
            ds.native_image(i)
            ds.native_label(i)

    seconds = _best_of(decode_all, repeats)
    log.info("decoded %d test images + labels in %.2f s", len(ds), seconds)
    return {"n_images": len(ds), "seconds": seconds, "ms_per_pair": 1000 * seconds / len(ds)}


def run(what: str, data_root: str | None = None, out_dir: Path = OUT_DIR) -> dict:
    """Run ``what`` ("evaluator", "decode" or "all"), save JSON and Markdown, return results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    if what in ("evaluator", "all"):
        results["evaluator"] = evaluator_throughput(data_root)
    if what in ("decode", "all"):
        results["decode"] = decode_time(data_root)
    env = environment(REPO_ROOT)
    for name, result in results.items():
        result["environment"] = env
        result["command"] = f"segbench benchmark {name}"
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out_dir / f"{name}.md").write_text(_markdown(name, result))
        log.info("wrote %s", out_dir / f"{name}.md")
    return results


def _markdown(name: str, r: dict) -> str:
    env = r["environment"]
    head = f"# Benchmark: {name}\n\nGenerated by `{r['command']}`; do not edit.\n\n"
    where = (
        f"\nMachine: {env['cpu']} ({env['cpu_count']} cores), Python {env['python']}, "
        f"numpy {env['numpy']}, torch {env['torch']}, commit {env['git_commit']}.\n"
    )
    if name == "evaluator":
        rows = "\n".join(
            f"| {k} | {v:.1f} | {v / r['mpix_per_s']['segbench']:.3f} |"
            for k, v in r["mpix_per_s"].items()
        )
        return (
            head + f"Confusion matrix of {r['n_images']} CamVid test label maps (360x480, "
            f"{r['megapixels']:.2f} Mpixel, void ignored), best of {r['repeats']} runs; the four "
            "results are checked equal first.\n\n| implementation | Mpixel/s | relative |\n"
            "|---|---:|---:|\n" + rows + "\n" + where
        )
    return (
        head + f"Decoding the CamVid test split ({r['n_images']} PNG images and their labels, "
        f"Pillow): **{r['seconds']:.2f} s** ({r['ms_per_pair']:.1f} ms per image+label), best "
        "of 3.\n" + where
    )
