"""Sliding window versus its fully convolutional twin: time, multiply-adds, identical output.

Run ``.venv/bin/python -m deep.sliding_window_benchmark`` (``--help`` for options). It

1. gets the patch classifier of :class:`~baselines.sliding_window.SlidingWindowCNN` with the
   given parameters, trained on CamVid train at the benchmark resolution (from the checkpoint
   cache, or trained now) and its twin :class:`~deep.patch_fcn.PatchFCN` (same weights);
2. on a fixed, evenly spread subset of CamVid test images times the stride-1 sliding window,
   the strided ones and the twin in the same process, checks that the twin's scores equal the
   stride-1 scores, and scores every variant against the ground truth of those images;
3. counts multiply-adds per image with :class:`torch.utils.flop_counter.FlopCounterMode`
   (convolutions and matrix products only: BatchNorm, ReLU and pooling are not counted), and
   compares the twin's achieved GFLOP/s with a large square ``torch.mm`` timed in the same run;
4. optionally scores the twin on the whole test split (its output being the stride-1 output).

Results go to ``results/benchmarks/sliding_window.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from baselines.sliding_window import SlidingWindowCNN, sample_positions
from bench.datasets import CamVid
from bench.datasets.base import evenly_spaced
from bench.datasets.root import REPO_ROOT
from bench.metrics import ConfusionMatrix
from bench.runner import upsample_proba
from bench.system import environment
from deep.patch_fcn import PatchFCN

log = logging.getLogger(__name__)
OUT_DIR = REPO_ROOT / "results" / "benchmarks"


def timed(fn: Callable[[], np.ndarray], repeats: int = 1) -> tuple[float, np.ndarray]:
    """Best wall time in ms of ``repeats`` calls (the least disturbed), and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, (time.perf_counter() - t0) * 1000.0)
    return best, out


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 ``n x n`` by ``n x n`` ``torch.mm`` (2 n^3 flops), best of repeats."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    ms, _ = timed(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / (ms / 1000.0) / 1e9


def count_macs(fn: Callable[[], object]) -> int:
    """Multiply-adds of the convolutions and matrix products ``fn`` runs (flops / 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def labels_at_native(proba: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Labels as the runner scores them: probabilities upsampled to the label's size."""
    return np.argmax(upsample_proba(proba, shape), axis=-1).astype(np.uint8)


def run(
    params: dict,
    n_images: int,
    strides: list[int],
    resolution: tuple[int, int] | None,
    repeats: int,
    score_split: bool,
) -> dict:
    """Do the benchmark (module docstring); returns what goes into the JSON file."""
    train = CamVid("train", resolution=resolution)
    val = CamVid("val", resolution=resolution)
    window = SlidingWindowCNN(**params, stride=1).fit(train, val)
    log.info("patch classifier %s", "trained" if window.trained_ else "loaded from checkpoint")
    twin = PatchFCN(**params).fit(train, val)
    test = CamVid("test", resolution=resolution)
    subset = evenly_spaced(len(test), n_images).tolist()
    h, w = test.image(subset[0]).shape[:2]
    gflops_mm = matmul_gflops()
    log.info("torch.mm: %.1f GFLOP/s", gflops_mm)

    p = params.get("patch_size", window.patch_size)
    patch_macs = count_macs(lambda: window.net_(torch.zeros(1, 3, p, p)))
    macs = {"twin": count_macs(lambda: twin.decision_function(test.image(subset[0])))}
    for s in [1, *strides]:
        macs[f"stride_{s}"] = patch_macs * len(sample_positions(h, s)) * len(sample_positions(w, s))

    variants = ["twin", "stride_1", *[f"stride_{s}" for s in strides]]
    times = {v: [] for v in variants}
    cms = {v: ConfusionMatrix(test.n_classes, test.ignore_index) for v in variants}
    agreement = {v: [] for v in variants}
    max_diff, labels_equal = [], []
    twin.decision_function(test.image(subset[0]))  # warm-up of lazy initialisation
    for i in tqdm(subset, desc="benchmark images", unit="img"):
        image, gt = test.image(i), test.native_label(i)
        ms, twin_scores = timed(lambda image=image: twin.decision_function(image), repeats)
        times["twin"].append(ms)
        outputs = {"twin": twin_scores}
        for s in [1, *strides]:
            window.set_params(stride=s)
            ms, outputs[f"stride_{s}"] = timed(lambda image=image: window.decision_function(image))
            times[f"stride_{s}"].append(ms)
            log.info(
                "image %s: stride %d %.0f ms, twin %.0f ms", test.names[i], s, ms, times["twin"][-1]
            )
        ref = outputs["stride_1"]
        max_diff.append(float(np.abs(outputs["twin"] - ref).max()))
        labels_equal.append(bool((outputs["twin"].argmax(-1) == ref.argmax(-1)).all()))
        for v in variants:
            agreement[v].append(float(np.mean(outputs[v].argmax(-1) == ref.argmax(-1))))
            proba = torch.softmax(torch.from_numpy(outputs[v]), -1).numpy()
            cms[v].update(labels_at_native(proba, gt.shape), gt)
    window.set_params(stride=1)

    ms_median = {v: float(np.median(times[v])) for v in variants}
    result = {
        "resolution": f"{h}x{w}",
        "params": params,
        "n_images_timed": len(subset),
        "images": [test.names[i] for i in subset],
        "repeats_twin": repeats,
        "patch_macs": int(patch_macs),
        "mac_counting": "torch.utils.flop_counter.FlopCounterMode (conv + matmul; flops / 2)",
        "torch_mm_gflops": gflops_mm,
        "twin_max_abs_diff_vs_stride_1": max(max_diff),
        "twin_labels_identical": all(labels_equal),
        "variants": {
            v: {
                "ms_per_image_median": ms_median[v],
                "ms_per_image": times[v],
                "gmacs_per_image": macs[v] / 1e9,
                "achieved_gflops": 2 * macs[v] / 1e9 / (ms_median[v] / 1000.0),
                "speedup_of_twin": ms_median[v] / ms_median["twin"],
                "label_agreement_with_stride_1": float(np.mean(agreement[v])),
                "subset_miou": cms[v].scores()["miou"],
                "subset_global_acc": cms[v].scores()["global_acc"],
            }
            for v in variants
        },
    }
    result["twin_fraction_of_mm"] = result["variants"]["twin"]["achieved_gflops"] / gflops_mm
    if score_split:
        result["twin_test"] = score_twin(twin, test)
    return result


def score_twin(twin: PatchFCN, test: CamVid) -> dict:
    """mIoU and class accuracy of the twin over the whole split, and its median ms/image."""
    cm = ConfusionMatrix(test.n_classes, test.ignore_index)
    times = []
    for i in tqdm(range(len(test)), desc="twin on the test split", unit="img"):
        image = test.image(i)
        t0 = time.perf_counter()
        proba = twin.predict_proba(image)
        times.append((time.perf_counter() - t0) * 1000.0)
        gt = test.native_label(i)
        cm.update(labels_at_native(proba, gt.shape), gt)
    s = cm.scores()
    return {
        "n_images": len(test),
        "miou": s["miou"],
        "mean_acc": s["mean_acc"],
        "global_acc": s["global_acc"],
        "ms_per_image_median": float(np.median(times)),
    }


def to_markdown(result: dict) -> str:
    """The human-readable table of ``result``."""
    v = result["variants"]
    lines = [
        "# Sliding-window CNN vs its fully convolutional twin",
        "",
        f"CamVid test at {result['resolution']}, {result['n_images_timed']} image(s) timed "
        f"({', '.join(result['images'])}); twin best of {result['repeats_twin']} runs, "
        "sliding windows one run each.",
        "",
        "| variant | ms/image | GMAC/image | achieved GFLOP/s | twin speed-up | "
        "labels = stride 1 | mIoU (subset) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in v.items():
        lines.append(
            f"| {name} | {r['ms_per_image_median']:.0f} | {r['gmacs_per_image']:.2f} | "
            f"{r['achieved_gflops']:.1f} | {r['speedup_of_twin']:.1f}x | "
            f"{100 * r['label_agreement_with_stride_1']:.2f} % | {100 * r['subset_miou']:.1f} |"
        )
    lines += [
        "",
        f"- Twin vs stride-1 sliding window: max |score difference| "
        f"{result['twin_max_abs_diff_vs_stride_1']:.2e}, labels identical: "
        f"{result['twin_labels_identical']}.",
        f"- Speed-up of the twin over the stride-1 sliding window (same run): "
        f"{v['stride_1']['speedup_of_twin']:.0f}x.",
        f"- Multiply-adds counted with {result['mac_counting']}; one crop costs "
        f"{result['patch_macs'] / 1e6:.2f} MMAC.",
        f"- torch.mm (2048x2048 float32) reaches {result['torch_mm_gflops']:.1f} GFLOP/s; the "
        f"twin achieves {v['twin']['achieved_gflops']:.1f} GFLOP/s "
        f"({100 * result['twin_fraction_of_mm']:.0f} % of it).",
    ]
    if "twin_test" in result:
        t = result["twin_test"]
        lines.append(
            f"- Twin on the whole test split ({t['n_images']} images, scored at 360x480): mIoU "
            f"{100 * t['miou']:.1f} %, class accuracy {100 * t['mean_acc']:.1f} %, "
            f"{t['ms_per_image_median']:.0f} ms/image."
        )
    lines += ["", f"Command: `{result['command']}`", "", "Machine:", ""]
    lines += [f"- {k}: {val}" for k, val in result["environment"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=3, help="test images timed")
    parser.add_argument("--strides", type=int, nargs="*", default=[2, 4, 8])
    parser.add_argument(
        "--resolution", type=int, nargs=2, default=None, metavar=("H", "W"),
        help="working resolution (default native 360x480); the classifier is trained at it",
    )  # fmt: skip
    parser.add_argument("--params", default="{}", help="SlidingWindowCNN parameters, JSON")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the twin")
    parser.add_argument("--no-score", action="store_true", help="skip the full test split")
    parser.add_argument("--name", default="sliding_window", help="output file stem")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    result = run(
        json.loads(args.params),
        args.n_images,
        args.strides,
        tuple(args.resolution) if args.resolution else None,
        args.repeats,
        not args.no_score,
    )
    argv_used = sys.argv[1:] if argv is None else argv
    result["command"] = shlex.join([".venv/bin/python", "-m", __spec__.name, *argv_used])
    result["environment"] = environment(REPO_ROOT)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (OUT_DIR / f"{args.name}.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
