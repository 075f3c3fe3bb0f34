"""The gap between a group's two best methods: a paired bootstrap over test frames.

The interval says how much the gap between two *trained models* depends on which test frames
were filmed; it says nothing about how another training seed would have come out (that is the
seed spread of each method's mIoU, shown beside it).
"""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import metrics
from bench.report.tables import Group, MethodSummary, as_float
from bench.rows import run_label, stem_of

log = logging.getLogger(__name__)

DEFAULT_N_BOOT = 1000


@dataclass(frozen=True)
class Gap:
    """``mIoU(a) - mIoU(b)`` of one seed's models and its paired 95 % interval (fractions)."""

    a: MethodSummary
    b: MethodSummary
    #: Which trained models were compared, in words: "seed 0" or "fold 1, seed 0".
    unit: str
    seed: int
    diff: float
    low: float
    high: float
    #: How the frames were resampled, in words (for the README).
    resampling: str

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def top_two_gap(group: Group) -> Gap | None:
    """The paired interval of the two best methods (by seed-mean mIoU) of ``group``.

    Both methods are compared at the lowest seed they share, from the per-image confusion
    matrices beside the rows (``<id>.seed<k>.cm.npz``). Frames are resampled in blocks within
    each sequence when the files say which sequence each image is from (key ``groups``), with
    the block length and resample count of the rows' own intervals (``ci``).

    Returns
    -------
    Gap or None
        None with fewer than two methods, no seed in common, a missing or unreadable matrix
        file, or matrices of different images (a paired test would be meaningless).
    """
    if len(group.methods) < 2:
        return None
    a, b = group.methods[:2]
    common = sorted(set(a.keys) & set(b.keys))
    if not common:
        return None
    row_a, row_b = a.row(common[0]), b.row(common[0])
    seed = int(row_a["seed"])
    try:
        with (
            np.load(group.folder / f"{stem_of(row_a)}.cm.npz") as fa,
            np.load(group.folder / f"{stem_of(row_b)}.cm.npz") as fb,
        ):
            if list(fa["names"]) != list(fb["names"]):
                return None
            per_a, per_b = fa["per_image"], fb["per_image"]
            sequences = list(fa["groups"]) if "groups" in fa.files else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        # The rows are still reported; only the paired interval needs the matrices.
        log.warning(
            "%s: per-image confusion matrices of %s or %s unreadable (%s): no paired gap "
            "interval; rerun the config with --force --only %s to rewrite them",
            group.folder, stem_of(row_a), stem_of(row_b), exc, a.method,
        )  # fmt: skip
        return None
    ci = row_a.get("ci") if isinstance(row_a.get("ci"), dict) else {}
    n_boot = int(ci.get("n_boot") or DEFAULT_N_BOOT)
    block = int(ci.get("block_length") or metrics.BLOCK_LENGTH)
    low, high, resampling = _paired_interval(per_a, per_b, sequences, block, n_boot, seed)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    diff = as_float(row_a["miou"]) - as_float(row_b["miou"])
    return Gap(a, b, run_label(row_a), seed, diff, low, high, resampling)


def _paired_interval(
    per_a: np.ndarray,
    per_b: np.ndarray,
    sequences: list[Any] | None,
    block: int,
    n_boot: int,
    seed: int,
) -> tuple[float, float, str]:
    n = len(per_a)
    # A dataset without video sequences labels every image as its own group; blocks within
    # one-image groups would never resample anything, so such images are independent draws.
    if sequences is not None and len(set(sequences)) == n:
        sequences = None
    if sequences is None:
        low, high = metrics.paired_bootstrap_diff(per_a, per_b, n_boot=n_boot, seed=seed)
        return low, high, f"bootstrap of single test images, {n_boot} resamples"
    n_seq = len(set(sequences))
    try:
        low, high = metrics.paired_bootstrap_diff(
            per_a, per_b, n_boot=n_boot, seed=seed, groups=sequences, block_length=block
        )
    except TypeError:
        # bench.metrics before the block bootstrap: fall back to single images, and say so.
        low, high = metrics.paired_bootstrap_diff(per_a, per_b, n_boot=n_boot, seed=seed)
        return low, high, f"bootstrap of single test images, {n_boot} resamples"
    if block == 1 and n_seq == 1:
        # one group of independent images (Stanford Background): blocks of one image each
        return low, high, f"bootstrap of single test images, {n_boot} resamples"
    return (
        low,
        high,
        f"moving-block bootstrap: blocks of {block} consecutive frames within each of the "
        f"{n_seq} test sequences, {n_boot} resamples",
    )
