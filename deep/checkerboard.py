"""Checkerboard artifacts of upsampled score maps: a metric and a zoomed figure.

The metric: *periodic share* of a score map at period ``s``
------------------------------------------------------------
A decoder whose last layers upsample by 2 (three times in FCN-8s) can imprint a pattern that
repeats every ``s = 2, 4, 8`` pixels and is locked to the output grid. Such a pattern survives
averaging over all pixels that share a *phase* (the same ``(row mod s, col mod s)``), while
image content, which is not locked to the grid, averages out. So, for each class channel ``S``
of the logits (C, H, W):

1. ``R = S - box_s(S)``: remove the smooth content with an ``s x s`` box filter (a box of the
   pattern's period removes the pattern from the smoothed map, so ``R`` keeps all of it);
2. ``P[a, b]`` = mean of ``R`` over the pixels of phase ``(a, b)``, minus the mean over phases
   (what is left is the grid-locked pattern; an even box shifts content by half a pixel, which
   the subtraction removes);
3. the metric is ``rms(P) / std(S)``, pooled over channels: the amplitude of the periodic
   pattern relative to the spread of the scores themselves.

It is 0 for a map without grid-locked pattern, about 1 when a checkerboard as strong as the
content is added, and unaffected by smooth content of any amplitude. With ``s = 8`` (the
default, FCN-8s's last three x2 layers) it sees patterns of period 2, 4 and 8 together. A border
of ``s`` pixels is left out (padding and box-filter edges are not artifacts). Pixels of every
kind are used; "flat" regions are obtained by the box residual rather than by masking, so the
metric needs no label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage


def checkerboard_index(scores: np.ndarray, period: int = 8) -> float:
    """Periodic share of a score map (see the module docstring).

    Parameters
    ----------
    scores : ndarray, shape (C, H, W) or (H, W)
        Logits (or any score map) at the output resolution.
    period : int
        Period ``s`` of the grid-locked pattern looked for (its divisors are included).

    Returns
    -------
    float
        ``rms(periodic pattern) / std(scores)``; 0 for a constant map.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2:
        scores = scores[None]
    c, h, w = scores.shape
    if h < 3 * period or w < 3 * period:
        raise ValueError(f"score map {h}x{w} is too small for period {period}")
    smooth = ndimage.uniform_filter(scores, size=(1, period, period), mode="nearest")
    residual = (scores - smooth)[:, period:-period, period:-period]
    inner = scores[:, period:-period, period:-period]
    # Crop to whole periods so every phase has the same number of pixels.
    hh = residual.shape[1] // period * period
    ww = residual.shape[2] // period * period
    phases = residual[:, :hh, :ww].reshape(c, hh // period, period, ww // period, period)
    pattern = phases.mean(axis=(1, 3))
    pattern -= pattern.mean(axis=(1, 2), keepdims=True)
    spread = inner.std(axis=(1, 2))
    total_spread = np.sqrt((spread**2).mean())
    if total_spread == 0:
        return 0.0
    return float(np.sqrt((pattern**2).mean()) / total_spread)


def margin(scores: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 score of (C, H, W) logits: flat inside objects, so a grid stands out."""
    top = np.sort(np.asarray(scores), axis=0)
    return top[-1] - top[-2]


def zoomed_score_figure(
    maps: dict[str, np.ndarray],
    path: str | Path,
    box: tuple[int, int, int] = (0, 0, 32),
    title: str = "",
) -> Path:
    """Save a figure of the same zoomed window of several score maps, pixels shown as blocks.

    Parameters
    ----------
    maps : dict of name -> ndarray (H, W)
        One score map per variant (for instance one class's logit, or the top-class margin).
    path : str or Path
        Where the PNG goes.
    box : (top, left, size)
        The zoomed window.
    title : str

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top, left, size = box
    n = len(maps)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, m) in zip(axes.ravel(), maps.items(), strict=False):
        crop = np.asarray(m, dtype=np.float64)[top : top + size, left : left + size]
        # Each map on its own scale: the question is the pattern's shape, not its units.
        ax.imshow(crop, cmap="viridis", interpolation="nearest")
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
