"""The one interface every segmentation method implements, classical or deep.

A method is a scikit-learn style estimator (parameters stored by ``__init__`` and returned by
``get_params``, learned attributes ending in ``_``) with

* ``fit(dataset, val_dataset=None) -> self``: learn from a :class:`~bench.datasets.base.
  SegmentationDataset` (iterating it gives ``(image, label, name)`` at the working resolution);
  ``val_dataset``, when given, is for model selection only;
* ``predict_proba(image) -> ndarray float32 (H, W, C)``: class probabilities of an HxWx3 uint8
  image, each pixel summing to 1;
* ``predict(image) -> ndarray uint8 (H, W)``: the most probable class.

Optionally, ``fit_summary() -> dict`` returns small JSON-able facts learned in ``fit`` (the
parameters chosen on val, the selected epoch); the runner stores them in the row.

A *stage* (the dense CRF) refines another method: it takes the fitted method as its
``estimator`` parameter with ``prefit=True``, so its ``fit`` only learns (or tunes) the stage.

Methods live in ``baselines/`` and ``deep/``, one file each; :mod:`bench.methods` maps config
names to them. A method never imports the runner or the report.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator


class SegmentationMethod(BaseEstimator):
    """Base class: gives ``predict`` from ``predict_proba`` and ``get_params`` from sklearn."""

    def fit(self, dataset, val_dataset=None) -> SegmentationMethod:  # noqa: ANN001
        raise NotImplementedError

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Most probable class of every pixel, uint8 (H, W)."""
        return np.argmax(self.predict_proba(image), axis=-1).astype(np.uint8)


def sample_pixels(
    label: np.ndarray, n: int, ignore_index: int, rng: np.random.Generator
) -> np.ndarray:
    """Flat indices of up to ``n`` labelled (non-void) pixels of ``label``, drawn uniformly.

    Parameters
    ----------
    label : ndarray of uint8, shape (H, W)
    n : int
        How many pixels to draw (all labelled pixels if there are fewer).
    ignore_index : int
    rng : numpy.random.Generator

    Returns
    -------
    index : ndarray of intp, shape (m,)
        Indices into ``label.ravel()``.
    """
    valid = np.flatnonzero(label.ravel() != ignore_index)
    if len(valid) <= n:
        return valid
    return rng.choice(valid, size=n, replace=False)


def full_proba(proba: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Spread a classifier's ``predict_proba`` columns (for ``classes``) over all classes.

    A scikit-learn classifier only has columns for the classes it saw in training; a class never
    sampled gets probability 0.
    """
    out = np.zeros((proba.shape[0], n_classes), dtype=np.float32)
    out[:, classes] = proba
    return out
