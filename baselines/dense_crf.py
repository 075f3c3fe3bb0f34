"""Fully connected CRF (Krähenbühl & Koltun, NIPS 2011) as a stage after any method.

The CRF takes a method's class probabilities as unary potentials (``-log p``) and adds two
Potts-style pairwise kernels over *all* pixel pairs: a Gaussian one over position (smoothness:
removes isolated pixels) and a bilateral one over position and colour (appearance: pixels alike
in colour and near each other should agree, which snaps labels to image edges). Mean-field
inference with permutohedral-lattice filtering makes it linear in the pixels; we use the
authors' C++ implementation through ``pydensecrf`` (package ``pydensecrf2``).

The bilateral kernel's widths and weight depend on the data and the resolution, so ``fit``
tunes them on the validation split (never the test split), by grid or random search scored
with the one evaluator.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pydensecrf.densecrf as dcrf
from sklearn.model_selection import ParameterGrid, ParameterSampler
from tqdm import tqdm

from bench.datasets.base import evenly_spaced
from bench.method import SegmentationMethod
from bench.metrics import ConfusionMatrix

log = logging.getLogger(__name__)

#: Default search over the bilateral kernel (27 settings). The Gaussian kernel's usual values
#: (3 px, weight 3) are robust and left fixed, as Krähenbühl & Koltun and DeepLab do.
DEFAULT_GRID: dict[str, list[float]] = {
    "sxy_bilateral": [20.0, 40.0, 80.0],
    "srgb_bilateral": [5.0, 13.0, 25.0],
    "compat_bilateral": [3.0, 5.0, 10.0],
}
_TUNABLE = (
    "n_iter", "sxy_gaussian", "compat_gaussian", "sxy_bilateral", "srgb_bilateral",
    "compat_bilateral",
)  # fmt: skip
#: Probabilities are clipped here before the log, so a hard 0 (a class the classifier never
#: saw) costs a large but finite energy and the CRF can still switch a pixel to it.
_EPS = 1e-6


def crf_refine(
    image: np.ndarray,
    proba: np.ndarray,
    n_iter: int = 5,
    sxy_gaussian: float = 3.0,
    compat_gaussian: float = 3.0,
    sxy_bilateral: float = 80.0,
    srgb_bilateral: float = 13.0,
    compat_bilateral: float = 10.0,
) -> np.ndarray:
    """Mean-field marginals of the dense CRF with unary ``-log(proba)``.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W, 3)
    proba : ndarray of float, shape (H, W, C)
        Class probabilities (each pixel summing to 1).
    n_iter : int
        Mean-field iterations.
    sxy_gaussian, compat_gaussian : float
        Width (pixels) and weight of the position-only kernel.
    sxy_bilateral, srgb_bilateral, compat_bilateral : float
        Widths (pixels, colour levels 0..255) and weight of the position + RGB kernel.

    Returns
    -------
    marginals : ndarray of float32, shape (H, W, C)
        Each pixel sums to 1.
    """
    h, w, c = proba.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image is {image.shape[:2]} but its probabilities are {(h, w)}")
    crf = dcrf.DenseCRF2D(w, h, c)
    # pydensecrf reads raw buffers: the unary must be C-contiguous float32 (C, H*W) and the
    # image C-contiguous uint8 (H, W, 3), or it silently reads garbage.
    unary = -np.log(np.clip(proba, _EPS, 1.0)).reshape(h * w, c).T
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=sxy_gaussian, compat=compat_gaussian)
    crf.addPairwiseBilateral(
        sxy=sxy_bilateral,
        srgb=srgb_bilateral,
        rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=compat_bilateral,
    )
    q = np.asarray(crf.inference(int(n_iter)), dtype=np.float32)
    q = q.T.reshape(h, w, c)
    return q / q.sum(axis=-1, keepdims=True)


class DenseCRF(SegmentationMethod):
    """A method refined by a fully connected CRF, with its kernels tuned on the val split.

    Parameters
    ----------
    estimator : SegmentationMethod
        Any method with ``predict_proba``.
    prefit : bool
        The estimator is already fitted: ``fit`` only tunes the CRF.
    n_iter, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb_bilateral, compat_bilateral
        CRF parameters (see :func:`crf_refine`); those searched by the tuning are starting
        values only.
    tune : bool
        Search the parameters of ``tune_grid`` on the validation split when ``fit`` gets one.
    tune_images : int
        Validation images (evenly spread) the search scores on, at the working resolution
        (labels resized by the loader), with :mod:`bench.metrics`.
    tune_grid : dict of str to list, optional
        Values to try per parameter (default :data:`DEFAULT_GRID`); keys from ``n_iter``,
        ``sxy_*``, ``srgb_bilateral``, ``compat_*``.
    tune_candidates : int, optional
        Try this many random settings of the grid instead of all of them.
    random_state : int
        Seeds the random search.

    Attributes
    ----------
    best_params_ : dict
        CRF parameters used by ``predict_proba``.
    search_results_ : list of dict
        Each setting tried, with its val mIoU and class-average accuracy; the first entry
        (``{"crf": False}``) is the estimator alone.
    best_score_, base_score_ : float
        Val mIoU (on the tuning images) of the chosen CRF and of the estimator alone.
    """

    def __init__(
        self,
        estimator: Any = None,
        prefit: bool = False,
        n_iter: int = 5,
        sxy_gaussian: float = 3.0,
        compat_gaussian: float = 3.0,
        sxy_bilateral: float = 80.0,
        srgb_bilateral: float = 13.0,
        compat_bilateral: float = 10.0,
        tune: bool = True,
        tune_images: int = 10,
        tune_grid: dict[str, list[float]] | None = None,
        tune_candidates: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.estimator = estimator
        self.prefit = prefit
        self.n_iter = n_iter
        self.sxy_gaussian = sxy_gaussian
        self.compat_gaussian = compat_gaussian
        self.sxy_bilateral = sxy_bilateral
        self.srgb_bilateral = srgb_bilateral
        self.compat_bilateral = compat_bilateral
        self.tune = tune
        self.tune_images = tune_images
        self.tune_grid = tune_grid
        self.tune_candidates = tune_candidates
        self.random_state = random_state

    def _crf_params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in _TUNABLE}

    def fit(self, dataset, val_dataset=None) -> DenseCRF:  # noqa: ANN001
        if self.estimator is None:
            raise ValueError("DenseCRF needs an estimator (a method with predict_proba)")
        if not self.prefit:
            self.estimator.fit(dataset, val_dataset=val_dataset)
        self.best_params_ = self._crf_params()
        self.search_results_: list[dict] = []
        self.best_score_ = self.base_score_ = float("nan")
        if self.tune and val_dataset is not None and len(val_dataset):
            self._tune(val_dataset)
        elif self.tune:
            log.warning("DenseCRF: no validation split given; CRF parameters left untuned")
        log.info("DenseCRF parameters: %s", self.best_params_)
        return self

    def _candidates(self) -> list[dict]:
        grid = DEFAULT_GRID if self.tune_grid is None else self.tune_grid
        unknown = sorted(set(grid) - set(_TUNABLE))
        if unknown:
            raise ValueError(f"tune_grid keys {unknown} are not CRF parameters {_TUNABLE}")
        if self.tune_candidates is None:
            return list(ParameterGrid(grid))
        return list(ParameterSampler(grid, self.tune_candidates, random_state=self.random_state))

    def _tune(self, val_dataset) -> None:  # noqa: ANN001
        """Pick the CRF parameters with the best mIoU on a few validation images."""
        index = evenly_spaced(len(val_dataset), self.tune_images)
        cached = []
        for i in index:  # the estimator runs once per image, not once per setting
            image, label, _ = val_dataset[int(i)]
            cached.append((image, self.estimator.predict_proba(image), label))
        n_classes, void = val_dataset.n_classes, val_dataset.ignore_index

        def score(params: dict | None) -> dict:
            cm = ConfusionMatrix(n_classes, void, keep_per_image=False)
            for image, proba, label in cached:
                refined = proba if params is None else crf_refine(image, proba, **params)
                cm.update(np.argmax(refined, axis=-1), label)
            s = cm.scores()
            return {"miou": s["miou"], "mean_acc": s["mean_acc"]}

        self.search_results_ = [{"crf": False, **score(None)}]
        self.base_score_ = self.search_results_[0]["miou"]
        best, best_score = self._crf_params(), -np.inf
        candidates = self._candidates()
        t0 = time.perf_counter()
        for candidate in tqdm(candidates, desc="CRF search", unit="setting", leave=False):
            params = {**self._crf_params(), **candidate}
            result = {"crf": True, **candidate, **score(params)}
            self.search_results_.append(result)
            # Strictly better only: ties keep the earlier (grid-order) setting, so reruns agree.
            if result["miou"] > best_score:
                best, best_score = params, result["miou"]
        self.best_params_, self.best_score_ = best, float(best_score)
        log.info(
            "DenseCRF: %d settings on %d val images in %.0f s; val mIoU %.3f -> %.3f",
            len(candidates), len(cached), time.perf_counter() - t0, self.base_score_,
            self.best_score_,
        )  # fmt: skip

    def fit_summary(self) -> dict:
        """The CRF parameters chosen on val and the search behind them (stored in the row)."""
        return {
            "crf_params": self.best_params_,
            "val_miou_without_crf": self.base_score_,
            "val_miou_with_crf": self.best_score_,
            "search": self.search_results_,
        }

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        proba = self.estimator.predict_proba(image)
        return crf_refine(image, proba, **self.best_params_)
