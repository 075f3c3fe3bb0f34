"""Choosing one weight of a refinement on validation images (graph cut, relative location).

Both refinements of the superpixel classifier (:mod:`baselines.graph_cut`,
:mod:`baselines.relative_location`) have one weight that says how much the refinement counts
against the classifier; each tries a list of weights on a few validation images and keeps the
best mIoU. The search is the same for both, so it lives here once. It is a loop over images and
candidates scored by the project's evaluator, not scikit-learn's ``GridSearchCV``: the candidates
share one fitted classifier and one cut of each image into superpixels, which a refit per
candidate would repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.datasets.base import evenly_spaced
from bench.metrics import ConfusionMatrix


def check_weights(weights: Any) -> list[float]:
    """``weights`` as a non-empty list of non-negative floats, or a ValueError naming them.

    Called before the classifier's fit, which takes minutes, so a bad list fails at once.
    """
    try:
        out = [float(w) for w in weights]
    except (TypeError, ValueError):
        out = []
    if not out or min(out) < 0:
        raise ValueError(f"weights must be non-negative numbers, got {weights!r}")
    return out


def tune_weight(
    val_dataset: Any,
    weights: Sequence[float],
    tune_images: int,
    predict: Callable[[np.ndarray, Sequence[float]], list[np.ndarray]],
    desc: str = "weight",
) -> tuple[float, list[dict[str, float]]]:
    """The weight with the best mIoU on ``tune_images`` evenly spaced validation images.

    Parameters
    ----------
    val_dataset : SegmentationDataset
        Images the weight is chosen on (never test images).
    weights : sequence of float
        Candidates.
    tune_images : int
        How many images, evenly spaced over ``val_dataset``.
    predict : callable
        ``predict(image, weights)`` returns one label map (H, W) per weight, in order; it does
        the work the weights share once per image.
    desc : str
        Progress-bar label.

    Returns
    -------
    weight : float
        The best candidate (ties: the smallest, the least refinement).
    search : list of dict
        ``{"weight", "miou"}`` for every candidate, recorded in the row's ``fit_summary``.
    """
    n_classes, void = val_dataset.n_classes, val_dataset.ignore_index
    cms = [ConfusionMatrix(n_classes, void, keep_per_image=False) for _ in weights]
    for i in tqdm(evenly_spaced(len(val_dataset), tune_images), desc=desc, unit="image",
                  leave=False):  # fmt: skip
        image, label, _ = val_dataset[int(i)]
        for cm, pred in zip(cms, predict(image, weights), strict=True):
            cm.update(pred, label)
    search = [{"weight": float(w), "miou": float(cm.scores()["miou"])}
              for w, cm in zip(weights, cms, strict=True)]  # fmt: skip
    best = max(search, key=lambda r: (r["miou"], -r["weight"]))
    return best["weight"], search
