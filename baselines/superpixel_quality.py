"""How good are the superpixels themselves? Boundary recall, undersegmentation error, ASA.

A superpixel classifier can never be better than its superpixels: a superpixel that straddles
two classes gets one label. These measures say how much each algorithm loses before any
classifier runs. Run ``python -m baselines.superpixel_quality`` to measure SLIC,
Felzenszwalb-Huttenlocher, quickshift and compact watershed (every algorithm of
:mod:`baselines.superpixels`) on the CamVid test split; it writes
``results/benchmarks/superpixels.json`` and ``.md``.

Conventions
-----------
* A *boundary pixel* of a label map is a pixel whose right or lower neighbour has another
  label (a one-pixel-thin boundary, on the upper/left side of each edge).
* Ground-truth boundaries touching void (on either side) are not counted: void is "not
  annotated", not a region with an edge. Void pixels are left out of every other measure too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, sparse
from skimage.measure import label as connected_components
from tqdm import tqdm

from bench.datasets.base import resize_label
from bench.datasets.root import REPO_ROOT
from bench.metrics import ConfusionMatrix
from bench.system import environment

log = logging.getLogger(__name__)
OUT_DIR = REPO_ROOT / "results" / "benchmarks"


def boundary_map(labels: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Boundary pixels of a label map (see the module's conventions).

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    ignore_index : int, optional
        Edges with this label on either side are not boundaries.

    Returns
    -------
    boundary : ndarray of bool, shape (H, W)
    """
    out = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        a = labels[:-1, :] if axis == 0 else labels[:, :-1]
        b = labels[1:, :] if axis == 0 else labels[:, 1:]
        edge = a != b
        if ignore_index is not None:
            edge &= (a != ignore_index) & (b != ignore_index)
        if axis == 0:
            out[:-1, :] |= edge
        else:
            out[:, :-1] |= edge
    return out


def boundary_recall(
    segments: np.ndarray, gt: np.ndarray, tolerance: int = 2, ignore_index: int | None = None
) -> float:
    """Share of ground-truth boundary pixels within ``tolerance`` of a superpixel boundary.

    Distance is the chessboard (Chebyshev) distance: a ground-truth boundary pixel counts as
    recalled when a superpixel boundary pixel lies in the (2t+1)x(2t+1) square around it.

    Parameters
    ----------
    segments : ndarray of int, shape (H, W)
        Superpixel labels.
    gt : ndarray of int, shape (H, W)
        Ground-truth class labels.
    tolerance : int
        Pixels.
    ignore_index : int, optional
        Void label of ``gt``.

    Returns
    -------
    recall : float
        In 0..1; NaN when ``gt`` has no boundary.
    """
    gt_boundary = boundary_map(gt, ignore_index)
    if not gt_boundary.any():
        return float("nan")
    near = ndimage.binary_dilation(
        boundary_map(segments), structure=np.ones((2 * tolerance + 1,) * 2, dtype=bool)
    )
    return float((near & gt_boundary).sum() / gt_boundary.sum())


def _overlaps(segments: np.ndarray, regions: np.ndarray, valid: np.ndarray) -> sparse.coo_matrix:
    """Pixel counts of every (superpixel, region) intersection, over ``valid`` pixels only."""
    s, r = segments[valid].ravel(), regions[valid].ravel()
    ones = np.ones(s.size, dtype=np.int64)
    m = sparse.coo_matrix((ones, (s, r)), shape=(int(segments.max()) + 1, int(r.max()) + 1))
    m.sum_duplicates()
    return m


def undersegmentation_error(
    segments: np.ndarray, gt: np.ndarray, ignore_index: int | None = None
) -> float:
    """Undersegmentation error in the formulation of Neubert & Protzel (2012).

    ``UE = 1/N * sum_G sum_{S : S & G nonempty} min(|S & G|, |S - G|)``, with G the
    ground-truth segments and N the pixels. Each superpixel that leaks out of a segment is
    charged the smaller of its part inside and its part outside, so a superpixel that only
    touches a segment with a few pixels is not charged its whole area (the "leak" penalty of
    Levinshtein et al.'s original formulation). Ground-truth segments are the connected
    components (4-connectivity) of each class; void pixels are left out of N and the areas.

    Parameters
    ----------
    segments : ndarray of int, shape (H, W)
    gt : ndarray of int, shape (H, W)
    ignore_index : int, optional

    Returns
    -------
    error : float
        0 for a perfect segmentation (every superpixel inside one segment); NaN when every
        pixel is void.
    """
    valid = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    if not valid.any():
        return float("nan")
    # +1 so that class 0 is not taken for background by skimage's label.
    regions = connected_components(gt.astype(np.int64) + 1, background=0, connectivity=1)
    m = _overlaps(segments, regions, valid)
    inside = m.data
    outside = np.asarray(m.tocsr().sum(axis=1)).ravel()[m.row] - inside
    return float(np.minimum(inside, outside).sum() / valid.sum())


def majority_labelling(
    segments: np.ndarray, gt: np.ndarray, n_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """Label every superpixel with its most frequent non-void ground-truth class.

    The best any classifier of whole superpixels can do (for pixel accuracy); all-void
    superpixels get class 0, which is never scored.

    Returns
    -------
    pred : ndarray of uint8, shape (H, W)
    """
    valid = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    n = int(segments.max()) + 1
    counts = np.bincount(
        segments[valid] * n_classes + gt[valid].astype(np.intp), minlength=n * n_classes
    ).reshape(n, n_classes)
    return counts.argmax(axis=1).astype(np.uint8)[segments]


def achievable_segmentation_accuracy(
    segments: np.ndarray, gt: np.ndarray, n_classes: int, ignore_index: int | None = None
) -> float:
    """Achievable segmentation accuracy (ASA): pixel accuracy of :func:`majority_labelling`.

    ``ASA = 1/N * sum_S max_c |S & G_c|`` over classes c and non-void pixels.

    Returns
    -------
    asa : float
        In 0..1 (1 when every superpixel holds one class); NaN when every pixel is void.
    """
    valid = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    if not valid.any():
        return float("nan")
    pred = majority_labelling(segments, gt, n_classes, ignore_index)
    return float((pred[valid] == gt[valid]).mean())


def measure(
    algorithm: str,
    params: dict,
    dataset,  # noqa: ANN001
    tolerance: int = 2,
) -> dict:
    """Every quality measure of one algorithm over ``dataset``, scored at native resolution.

    Superpixels are computed at the dataset's working resolution (what the classifier sees)
    and scaled up (nearest) to the native label size, as the runner scores predictions.
    Boundary recall, UE and ASA are means over images; the mIoU upper bound sums one
    confusion matrix over the split with :mod:`bench.metrics`.
    """
    from baselines.superpixels import superpixels

    c, void = dataset.n_classes, dataset.ignore_index
    cm = ConfusionMatrix(c, void, keep_per_image=False)
    recall, ue, asa, count, ms = [], [], [], [], []
    for i in tqdm(range(len(dataset)), desc=algorithm, unit="img", leave=False):
        image = dataset.image(i)
        t0 = time.perf_counter()
        seg = superpixels(image, algorithm, params)
        ms.append(1000 * (time.perf_counter() - t0))
        count.append(int(seg.max()) + 1)
        gt = dataset.native_label(i)
        if seg.shape != gt.shape:
            seg = resize_label(seg.astype(np.int32), gt.shape).astype(np.intp)
        recall.append(boundary_recall(seg, gt, tolerance, void))
        ue.append(undersegmentation_error(seg, gt, void))
        asa.append(achievable_segmentation_accuracy(seg, gt, c, void))
        cm.update(majority_labelling(seg, gt, c, void), gt)
    s = cm.scores()
    return {
        "algorithm": algorithm,
        "params": params,
        "boundary_recall": float(np.nanmean(recall)),
        "undersegmentation_error": float(np.nanmean(ue)),
        "asa": float(np.nanmean(asa)),
        "miou_upper_bound": s["miou"],
        "mean_acc_upper_bound": s["mean_acc"],
        "segments_mean": float(np.mean(count)),
        "segments_std": float(np.std(count)),
        "ms_per_image_median": float(np.median(ms)),
    }


def _markdown(result: dict) -> str:
    env = result["environment"]
    rows = "\n".join(
        f"| {r['algorithm']} | {r['segments_mean']:.0f} ± {r['segments_std']:.0f} | "
        f"{100 * r['boundary_recall']:.1f} | {100 * r['undersegmentation_error']:.1f} | "
        f"{100 * r['asa']:.1f} | {100 * r['miou_upper_bound']:.1f} | "
        f"{r['ms_per_image_median']:.0f} | `{json.dumps(r['params'])}` |"
        for r in result["algorithms"]
    )
    res = result["resolution"]
    return (
        "# Benchmark: superpixel quality\n\n"
        f"Generated by `{result['command']}`; do not edit.\n\n"
        f"CamVid {result['split']} split ({result['n_images']} images); superpixels computed at "
        f"{res[0]}x{res[1]} and scored at 360x480 against the ground truth, void left out. "
        f"Boundary recall with a tolerance of {result['tolerance']} px (chessboard distance); "
        "undersegmentation error as Neubert & Protzel (2012), over connected components of "
        "each class; ASA = pixel accuracy of labelling each superpixel with its majority "
        "class, whose mIoU (bench.metrics) is the upper bound of any superpixel classifier. "
        "ms/image: the superpixel algorithm alone (median).\n\n"
        "| algorithm | superpixels | boundary recall % | UE % | ASA % | mIoU bound % | "
        "ms/image | parameters |\n|---|---:|---:|---:|---:|---:|---:|---|\n"
        + rows
        + f"\n\nMachine: {env['cpu']} ({env['cpu_count']} cores), Python {env['python']}, "
        f"scikit-image {env['scikit-image']}, commit {env['git_commit']}.\n"
    )


def main(argv: list[str] | None = None) -> dict:
    """Measure each algorithm (with the parameters of its default method) on CamVid."""
    from baselines.superpixels import ALGORITHMS, SuperpixelClassifier
    from bench.datasets import CamVid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--resolution", type=int, nargs=2, default=[180, 240])
    parser.add_argument("--subset", type=int, default=None, help="evenly spread images")
    parser.add_argument("--tolerance", type=int, default=2)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    dataset = CamVid(args.split, root=args.data_root, resolution=args.resolution,
                     subset=args.subset)  # fmt: skip
    results = []
    for algorithm in ALGORITHMS:
        params = SuperpixelClassifier(algorithm=algorithm)._superpixel_params()
        r = measure(algorithm, params, dataset, args.tolerance)
        log.info("%s: %s", algorithm, r)
        results.append(r)
    argv = sys.argv[1:] if argv is None else argv
    result = {
        "command": " ".join([".venv/bin/python -m baselines.superpixel_quality", *argv]),
        "split": args.split,
        "n_images": len(dataset),
        "resolution": list(args.resolution),
        "tolerance": args.tolerance,
        "algorithms": results,
        "environment": environment(REPO_ROOT),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "superpixels.json").write_text(json.dumps(result, indent=1))
    (args.out_dir / "superpixels.md").write_text(_markdown(result))
    log.info("wrote %s", args.out_dir / "superpixels.md")
    return result


if __name__ == "__main__":
    main()
