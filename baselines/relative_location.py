"""A learned relative-location prior over the superpixel classifier (Gould et al. 2008).

Where class ``b`` tends to lie relative to class ``a`` is learned from the training labels: for
every pair of classes a map ``M[a, b](du, dv)``, the probability that the pixel at offset
``(du, dv)`` (a fraction of the image's height and width) from a pixel of class ``a`` has class
``b``. The lecture notes' example, "the pixels above the pixels 'chair' more likely to be
'person'", is the map ``M[chair, person]`` at negative ``dv``. At test time the classifier's
probabilities vote through the maps: every location of the image says what it expects at every
other, and the votes for a superpixel,

    v_s(c) = sum_x sum_a P_a(x) M[a, c](x_s - x)    (normalised over c)

are combined with its own probabilities as ``p(c) v_s(c) ** weight`` (normalised), the weight
chosen on the validation images (``fit``; 0 = the classifier alone). Gould et al. combine the two
in a logistic model learned per class and add a CRF over superpixels; this keeps the prior and
its vote and leaves the rest to the other stages (dense CRF, graph cut). Departures: the maps
are counted on label maps shrunk to ``grid`` cells (so an offset is one cell, about 1/30 of the
image's height), smoothed with a Gaussian of ``smoothing`` cells; a location does not vote for
offsets within ``exclude`` cells of itself (else a superpixel would mostly vote for its own
class); the votes are computed on the same grid, not superpixel to superpixel.

Counting and voting are cross-correlations of class maps, done with SciPy's FFT convolution.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from scipy import ndimage, signal
from tqdm import tqdm

from baselines.graph_cut import superpixel_proba
from baselines.superpixels import SuperpixelClassifier
from baselines.weight_search import check_weights, tune_weight
from bench.method import SegmentationMethod

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
_EPS = 1e-6


def shrink_label(label: np.ndarray, grid: tuple[int, int], n_classes: int) -> np.ndarray:
    """Class shares of each cell of a ``grid`` (rows, columns) over ``label``, (C, rows, cols).

    Void pixels count for no class, so a cell's shares may sum to less than 1.
    """
    h, w = label.shape
    rows = np.minimum((np.arange(h) * grid[0]) // h, grid[0] - 1)
    cols = np.minimum((np.arange(w) * grid[1]) // w, grid[1] - 1)
    cell = rows[:, None] * grid[1] + cols[None, :]
    valid = label < n_classes
    counts = np.bincount(
        (label[valid].astype(np.int64) * grid[0] * grid[1] + cell[valid]),
        minlength=n_classes * grid[0] * grid[1],
    ).reshape(n_classes, *grid)
    size = np.bincount(cell.ravel(), minlength=grid[0] * grid[1]).reshape(grid)
    return counts / np.maximum(size, 1)


def cross_correlations(maps: np.ndarray) -> np.ndarray:
    """``out[a, b](d) = sum_x maps[a](x) maps[b](x + d)`` for all class pairs and offsets.

    ``maps`` is (C, rows, cols); the result (C, C, 2 rows - 1, 2 cols - 1), offset 0 in the middle.
    """
    c = maps.shape[0]
    flipped = maps[:, ::-1, ::-1]
    return np.stack([
        np.stack([signal.fftconvolve(maps[b], flipped[a], mode="full") for b in range(c)])
        for a in range(c)
    ])  # fmt: skip


def relative_location_maps(counts: np.ndarray, smoothing: float, exclude: int) -> np.ndarray:
    """Normalised maps ``M[a, b](d)`` from summed :func:`cross_correlations` ``counts``.

    Smoothed over the offsets, offsets within ``exclude`` cells of 0 set to 0, then normalised
    so that for every ``a`` and offset the classes ``b`` sum to 1 (where anything was seen).
    """
    maps = counts.astype(np.float64)
    if smoothing:
        maps = ndimage.gaussian_filter(maps, sigma=(0, 0, smoothing, smoothing))
    ch, cw = maps.shape[2] // 2, maps.shape[3] // 2
    if exclude > 0:
        maps[:, :, ch - exclude + 1 : ch + exclude, cw - exclude + 1 : cw + exclude] = 0.0
    total = maps.sum(axis=1, keepdims=True)
    return np.divide(maps, total, out=np.zeros_like(maps), where=total > 0)


def location_votes(proba_grid: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``v(c, x) = sum_a sum_y proba_grid[a](y) maps[a, c](x - y)``, normalised over c.

    ``proba_grid`` is (C, rows, cols) class probabilities on the grid; returns the same shape.
    """
    c, rows, cols = proba_grid.shape
    votes = np.zeros_like(proba_grid)
    for target in range(c):
        for a in range(c):
            full = signal.fftconvolve(proba_grid[a], maps[a, target], mode="full")
            # the map's centre (offset 0) sits at (rows - 1, cols - 1) of the full output
            votes[target] += full[rows - 1 : 2 * rows - 1, cols - 1 : 2 * cols - 1]
    votes = np.maximum(votes, 0.0)  # FFT round-off
    return votes / np.maximum(votes.sum(axis=0, keepdims=True), _EPS)


class SuperpixelRelativeLocation(SegmentationMethod):
    """Superpixel classifier with a learned relative-location prior (see the module doc).

    Parameters
    ----------
    superpixel : dict, optional
        Parameters of the :class:`~baselines.superpixels.SuperpixelClassifier` fitted first
        (one algorithm; ``random_state`` comes from this method's).
    grid : sequence of two int
        Cells (rows, columns) the labels are shrunk to for counting and voting.
    smoothing : float
        Gaussian width of the maps, in cells.
    exclude : int
        Offsets closer than this many cells do not vote.
    weights : sequence of float
        Exponents of the vote tried on the validation images (best mIoU kept, ties: the
        smallest); one value: no tuning.
    tune_images : int
        Validation images (evenly spaced) the weight is chosen on.
    random_state : int
    """

    def __init__(
        self,
        superpixel: dict | None = None,
        grid: tuple[int, int] | list[int] = (30, 40),
        smoothing: float = 1.0,
        exclude: int = 2,
        weights: tuple[float, ...] | list[float] = DEFAULT_WEIGHTS,
        tune_images: int = 16,
        random_state: int = 0,
    ) -> None:
        self.superpixel = superpixel
        self.grid = grid
        self.smoothing = smoothing
        self.exclude = exclude
        self.weights = weights
        self.tune_images = tune_images
        self.random_state = random_state

    def fit(self, dataset, val_dataset=None) -> SuperpixelRelativeLocation:  # noqa: ANN001
        params = dict(self.superpixel or {})
        if "+" in str(params.get("algorithm", "")):
            raise ValueError("the relative-location prior needs one superpixel algorithm")
        weights = check_weights(self.weights)  # before the classifier's fit, minutes long
        grid = tuple(int(g) for g in self.grid)
        self.n_classes_ = c = dataset.n_classes
        counts = np.zeros((c, c, 2 * grid[0] - 1, 2 * grid[1] - 1))
        for _, label, _ in tqdm(dataset, desc="relative location", unit="image", leave=False):
            counts += cross_correlations(shrink_label(label, grid, c))
        self.maps_ = relative_location_maps(counts, self.smoothing, self.exclude)
        self.classifier_ = SuperpixelClassifier(**params, random_state=self.random_state)
        self.classifier_.fit(dataset)
        self.search_: list[dict[str, Any]] = []
        if val_dataset is None or len(weights) == 1:
            self.weight_ = weights[0]
            return self

        def predict(image: np.ndarray, ws: list[float]) -> list[np.ndarray]:
            segments, proba, votes = self._proba_and_votes(image)
            return [np.argmax(self._combine(proba, votes, w), axis=1)[segments] for w in ws]

        t0 = time.perf_counter()
        self.weight_, self.search_ = tune_weight(
            val_dataset, weights, self.tune_images, predict, desc="relative location weight"
        )
        best = max(r["miou"] for r in self.search_)
        log.info("relative location: weight %s chosen on %d val images (mIoU %.1f %%, %.0f s)",
                 self.weight_, min(self.tune_images, len(val_dataset)), 100 * best,
                 time.perf_counter() - t0)  # fmt: skip
        return self

    def _proba_and_votes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Superpixels, their probabilities and their mean votes, (n, C) each."""
        segments, proba = superpixel_proba(self.classifier_, image)
        grid = tuple(int(g) for g in self.grid)
        n, c = proba.shape
        # the superpixels' probabilities on the grid: a cell's mean over its pixels
        pixel = proba[segments]  # (H, W, C)
        h, w = segments.shape
        rows = np.minimum((np.arange(h) * grid[0]) // h, grid[0] - 1)
        cols = np.minimum((np.arange(w) * grid[1]) // w, grid[1] - 1)
        cell = (rows[:, None] * grid[1] + cols[None, :]).ravel()
        size = np.bincount(cell, minlength=grid[0] * grid[1])
        on_grid = np.stack([
            np.bincount(cell, weights=pixel[..., k].ravel(), minlength=size.size) / size
            for k in range(c)
        ]).reshape(c, *grid)  # fmt: skip
        votes_grid = location_votes(on_grid, self.maps_)
        # each superpixel's votes: the mean over its pixels of their cells' votes
        area = np.bincount(segments.ravel(), minlength=n)
        per_pixel = votes_grid.reshape(c, -1)[:, cell]  # (C, H*W)
        votes = np.stack([
            np.bincount(segments.ravel(), weights=per_pixel[k], minlength=n) for k in range(c)
        ], axis=1) / np.maximum(area, 1)[:, None]  # fmt: skip
        return segments, proba, votes

    @staticmethod
    def _combine(proba: np.ndarray, votes: np.ndarray, weight: float) -> np.ndarray:
        if weight == 0:
            return proba
        out = proba * np.clip(votes, _EPS, 1.0) ** weight
        return out / out.sum(axis=1, keepdims=True)

    def fit_summary(self) -> dict[str, Any]:
        return {"weight": self.weight_, "search": self.search_}

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        segments, proba, votes = self._proba_and_votes(image)
        return self._combine(proba, votes, self.weight_)[segments].astype(np.float32)
