"""Graph cuts on the superpixel graph: alpha-expansion over a contrast-sensitive Potts model.

The other refinement the lecture notes name beside the CRF ("superpixels fed into ... Conditional
Random Fields or Graph Cuts"). The superpixel classifier (:mod:`baselines.superpixels`) labels
each superpixel on its own; here the labels of all superpixels of an image are chosen together,
as the minimum of

    E(l) = sum_s area_s * -log p_s(l_s)
           + weight * sum_(s,t adjacent) L_st * exp(-beta |c_s - c_t|^2) * [l_s != l_t]

with ``p_s`` the classifier's probabilities of superpixel ``s``, ``L_st`` the number of pixel
pairs (4-neighbours) across the boundary of ``s`` and ``t``, ``c`` the mean CIELAB colour and
``beta = 1 / (2 mean |c_s - c_t|^2)`` over the image's edges (Boykov & Jolly 2001, Rother et
al. 2004). It is the pixel-level contrast-sensitive Potts energy with every pixel of a superpixel
forced to one label: a long boundary between alike colours is expensive to cut, a short one
across an edge is cheap. ``weight`` is chosen on the validation images (``fit``).

Minimised by alpha-expansion (Boykov, Veksler & Zabih 2001): for each class alpha in turn, one
min-cut decides which superpixels switch to alpha; the Potts term is a metric, so every move is
an exact binary graph cut and the energy never rises. The min-cuts come from PyMaxflow 1.3.2
(Boykov-Kolmogorov maxflow; depends on NumPy only). The expansion loop is written here, on top
of it, because PyMaxflow's own ``fastmin.aexpansion_grid`` works on pixel grids only, not on a
graph of superpixels; ``gco-wrapper`` 3.0.9 (GCO) has expansion on general graphs but needs
Cython at run time and its C++ core is licensed for research only.

The result is a labelling (a MAP estimate), not marginals: ``predict_proba`` gives each pixel
probability 1 for its label.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import maxflow
import numpy as np
from skimage.color import rgb2lab

from baselines.superpixels import SuperpixelClassifier, context_features, superpixel_features
from baselines.weight_search import check_weights, tune_weight
from bench.method import SegmentationMethod

log = logging.getLogger(__name__)

#: Weights of the pairwise term tried on the validation images; 0 is the classifier alone, so
#: the tuning may keep it.
DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Probabilities are clipped here before the log (as the dense CRF does): a class the
#: classifier never saw costs a large but finite energy.
_EPS = 1e-6


def potts_energy(
    labels: np.ndarray, unary: np.ndarray, edges: np.ndarray, weights: np.ndarray
) -> float:
    """``sum_s unary[s, labels[s]] + sum_e weights[e] * [labels[a_e] != labels[b_e]]``."""
    data = unary[np.arange(len(labels)), labels].sum()
    cut = labels[edges[:, 0]] != labels[edges[:, 1]] if len(edges) else np.zeros(0, bool)
    return float(data + weights[cut].sum())


def alpha_expansion(
    unary: np.ndarray,
    edges: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray | None = None,
    max_cycles: int = 10,
) -> np.ndarray:
    """Minimise a Potts energy on a graph by alpha-expansion moves.

    Parameters
    ----------
    unary : ndarray of float, shape (n, C)
        Cost of giving node ``s`` label ``c``.
    edges : ndarray of int, shape (m, 2)
        Node pairs (each once).
    weights : ndarray of float, shape (m,)
        Non-negative cost of giving the two nodes of an edge different labels.
    labels : ndarray of int, shape (n,), optional
        Start; default the cheapest label of each node.
    max_cycles : int
        Passes over all labels at most; it stops earlier after a pass without change.

    Returns
    -------
    labels : ndarray of intp, shape (n,)
        A local minimum with respect to expansion moves (within a factor 2 of the global one
        for Potts, Boykov et al. 2001).
    """
    unary = np.asarray(unary, dtype=np.float64)
    n, n_labels = unary.shape
    edges = np.asarray(edges, dtype=np.intp).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) != len(edges) or (weights < 0).any():
        raise ValueError("weights must be one non-negative number per edge")
    labels = unary.argmin(axis=1) if labels is None else np.asarray(labels, dtype=np.intp).copy()
    if not len(edges) or not weights.any():
        return unary.argmin(axis=1)  # no pairwise term: each node on its own
    a, b = edges[:, 0], edges[:, 1]
    energy = potts_energy(labels, unary, edges, weights)
    for _ in range(max_cycles):
        changed = False
        for alpha in range(n_labels):
            new = _expand(unary, a, b, weights, labels, alpha)
            new_energy = potts_energy(new, unary, edges, weights)
            # Accept strict decreases only: ties would let the labels cycle.
            if new_energy < energy - 1e-9 * max(1.0, abs(energy)):
                labels, energy, changed = new, new_energy, True
        if not changed:
            break
    return labels


def _expand(
    unary: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    w: np.ndarray,
    labels: np.ndarray,
    alpha: int,
) -> np.ndarray:
    """The best expansion move to ``alpha``: x_s = 1 switches node s to alpha.

    A pairwise term with costs A, B, C, D for (x_a, x_b) = 00, 01, 10, 11 equals
    A + (C - A) x_a + (D - C) x_b + (B + C - A - D) (1 - x_a) x_b (Kolmogorov & Zabih 2004);
    the last coefficient is >= 0 because Potts is a metric, so it is one edge a -> b.
    """
    n = len(labels)
    la, lb = labels[a], labels[b]
    cost_a = w * (la != lb)  # A: both keep their label
    cost_b = w * (la != alpha)  # B: a keeps, b switches
    cost_c = w * (alpha != lb)  # C: a switches, b keeps
    # D = 0: both alpha
    cost1 = unary[:, alpha].copy()  # cost of x_s = 1 (switch)
    cost0 = unary[np.arange(n), labels].copy()  # cost of x_s = 0 (keep)
    np.add.at(cost1, a, cost_c - cost_a)
    np.add.at(cost1, b, -cost_c)
    pair = cost_b + cost_c - cost_a
    # Nodes with alpha already cannot move: pin them to "keep" (x = 0).
    pinned = labels == alpha
    cost1[pinned] = np.inf
    graph = maxflow.Graph[float](n, len(a))
    nodes = graph.add_nodes(n)
    low = np.minimum(cost0, cost1)
    big = cost0[np.isfinite(cost0)].sum() + np.abs(cost1[np.isfinite(cost1)]).sum() + w.sum() + 1
    # Sink side = x 1: its cost is the source edge's capacity (source caps = cost1).
    graph.add_grid_tedges(nodes, np.where(pinned, big, cost1 - low), cost0 - low)
    keep = pair > 0
    graph.add_edges(nodes[a[keep]], nodes[b[keep]], pair[keep], np.zeros(int(keep.sum())))
    graph.maxflow()
    switch = graph.get_grid_segments(nodes) & ~pinned
    out = labels.copy()
    out[switch] = alpha
    return out


def superpixel_graph(
    image: np.ndarray, segments: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of adjacent superpixels, their boundary lengths and contrast factors, and areas.

    Returns
    -------
    edges : ndarray of intp, shape (m, 2)
        Pairs ``s < t`` of 4-adjacent superpixels.
    strength : ndarray of float64, shape (m,)
        ``L_st * exp(-beta |c_s - c_t|^2)`` (see the module doc).
    area : ndarray of float64, shape (n,)
        Pixels of each superpixel.
    """
    n = int(segments.max()) + 1
    s = np.concatenate([segments[:, :-1].ravel(), segments[:-1, :].ravel()])
    t = np.concatenate([segments[:, 1:].ravel(), segments[1:, :].ravel()])
    cross = s != t
    lo, hi = np.minimum(s[cross], t[cross]), np.maximum(s[cross], t[cross])
    keys, length = np.unique(lo.astype(np.int64) * n + hi, return_counts=True)
    edges = np.stack([keys // n, keys % n], axis=1).astype(np.intp)
    area = np.bincount(segments.ravel(), minlength=n).astype(np.float64)
    lab = rgb2lab(image).reshape(-1, 3)
    colour = (
        np.stack(
            [np.bincount(segments.ravel(), weights=lab[:, k], minlength=n) for k in range(3)],
            axis=1,
        )
        / np.maximum(area, 1.0)[:, None]
    )
    dist = ((colour[edges[:, 0]] - colour[edges[:, 1]]) ** 2).sum(axis=1)
    mean = dist.mean() if len(dist) else 0.0
    beta = 1.0 / (2.0 * mean) if mean > 0 else 0.0
    return edges, length * np.exp(-beta * dist), area


def superpixel_proba(method: SuperpixelClassifier, image: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(segments, per-superpixel probabilities)`` of a fitted single-algorithm classifier.

    What :meth:`SuperpixelClassifier.predict_proba` computes before it spreads the
    probabilities over the pixels (``proba[segments]``; a test checks they agree), so the
    superpixels are cut once per image.
    """
    segments = method.segment(image)
    features = superpixel_features(image, segments, method.context)
    proba = method._round_proba(method.classifiers_[0], features, None)
    for model in method.classifiers_[1:]:  # auto-context rounds, if any
        proba = method._round_proba(model, features, context_features(segments, proba))
    return segments, proba


def graph_cut_labels(
    image: np.ndarray, segments: np.ndarray, proba: np.ndarray, weight: float
) -> np.ndarray:
    """Superpixel labels minimising the energy of the module doc for ``weight``."""
    edges, strength, area = superpixel_graph(image, segments)
    unary = area[:, None] * -np.log(np.clip(proba, _EPS, 1.0))
    return alpha_expansion(unary, edges, weight * strength)


class SuperpixelGraphCut(SegmentationMethod):
    """Superpixel classifier, then alpha-expansion over the superpixel graph.

    Parameters
    ----------
    superpixel : dict, optional
        Parameters of the :class:`~baselines.superpixels.SuperpixelClassifier` it fits first
        (one algorithm; ``random_state`` comes from this method's).
    weights : sequence of float
        Pairwise weights tried on the validation images; the best mIoU is kept (ties: the
        smallest weight). One value: no tuning.
    tune_images : int
        Validation images (evenly spaced) the weight is chosen on; without a validation split
        the first weight is used.
    max_cycles : int
        Passes of alpha-expansion over all classes at most.
    random_state : int
    """

    def __init__(
        self,
        superpixel: dict | None = None,
        weights: tuple[float, ...] | list[float] = DEFAULT_WEIGHTS,
        tune_images: int = 16,
        max_cycles: int = 10,
        random_state: int = 0,
    ) -> None:
        self.superpixel = superpixel
        self.weights = weights
        self.tune_images = tune_images
        self.max_cycles = max_cycles
        self.random_state = random_state

    def fit(self, dataset, val_dataset=None) -> SuperpixelGraphCut:  # noqa: ANN001
        params = dict(self.superpixel or {})
        if "+" in str(params.get("algorithm", "")):
            raise ValueError("graph cuts need one superpixel algorithm, not several")
        weights = check_weights(self.weights)  # before the classifier's fit, minutes long
        self.classifier_ = SuperpixelClassifier(**params, random_state=self.random_state)
        self.classifier_.fit(dataset)
        self.n_classes_ = dataset.n_classes
        self.search_: list[dict[str, Any]] = []
        if val_dataset is None or len(weights) == 1:
            self.weight_ = weights[0]
            return self

        def predict(image: np.ndarray, ws: list[float]) -> list[np.ndarray]:
            segments, proba = superpixel_proba(self.classifier_, image)
            return [graph_cut_labels(image, segments, proba, w)[segments] for w in ws]

        t0 = time.perf_counter()
        self.weight_, self.search_ = tune_weight(
            val_dataset, weights, self.tune_images, predict, desc="graph cut weight"
        )
        self.tune_seconds_ = time.perf_counter() - t0
        best = max(r["miou"] for r in self.search_)
        log.info("graph cut: weight %s chosen on %d val images (mIoU %.1f %%, %.0f s)",
                 self.weight_, min(self.tune_images, len(val_dataset)), 100 * best,
                 self.tune_seconds_)  # fmt: skip
        return self

    def fit_summary(self) -> dict[str, Any]:
        return {"weight": self.weight_, "search": self.search_}

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        segments, proba = superpixel_proba(self.classifier_, image)
        labels = graph_cut_labels(image, segments, proba, self.weight_)
        out = np.zeros((*segments.shape, self.n_classes_), dtype=np.float32)
        np.put_along_axis(out, labels[segments][..., None], 1.0, axis=-1)
        return out
