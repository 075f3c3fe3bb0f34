"""A synthetic dataset of textured shapes on a textured ground, for fast and exact tests.

Each class has its own texture (smooth noise, stripes, checks, speckle) and a mean colour that
is jittered per image, so colour alone separates the classes only partly and a method that looks
at texture does better: something real methods can learn, in seconds, at any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import ellipse, polygon

from bench.datasets.base import SegmentationDataset
from bench.errors import SegbenchError

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_MEAN_COLOUR = np.array([[120, 105, 85], [70, 115, 165], [165, 85, 80], [95, 150, 90]], float)


class Synthetic(SegmentationDataset):
    """Seeded textured shapes; item ``i`` of a split is the same for the same seed.

    Parameters
    ----------
    split : {"train", "val", "test"}
    n_images : int
        Images in the split.
    size : (int, int)
        Native (H, W) of every image.
    seed : int
        Seed of the whole dataset; splits use disjoint streams.
    resolution : (int, int), optional
        Working resolution for the methods (scoring stays at ``size``).
    colour_jitter : float
        Per-image shift of each class colour (standard deviation, 0..255 scale): the larger, the
        less colour alone tells the classes apart.
    root : str or Path, optional
        Ignored: nothing is read from disk. Taken so that generic code passes a config's
        ``data_root`` to every dataset alike.
    subset : int, optional
        Keep this many images: the first ``subset`` (replaces ``n_images``; items are generated
        from their index, so these are the same images a larger split starts with).

    Notes
    -----
    A one-pixel band along every shape boundary is labelled void (``ignore_index`` = 4), as
    CamVid's boundaries often are, so that the ignore index is exercised too.
    """

    class_names = ("ground", "stripes", "checks", "speckle")
    palette = np.array(
        [[120, 105, 85], [70, 115, 165], [165, 85, 80], [95, 150, 90], [0, 0, 0]], dtype=np.uint8
    )
    ignore_index = 4

    def __init__(
        self,
        split: str = "train",
        n_images: int = 16,
        size: Sequence[int] = (96, 128),
        seed: int = 0,
        resolution: Sequence[int] | None = None,
        colour_jitter: float = 30.0,
        root: str | Path | None = None,
        subset: int | None = None,
    ) -> None:
        super().__init__(split, resolution)
        if subset is not None:
            n_images = subset
        if split not in _SPLIT_IDS:
            raise SegbenchError(f"synthetic has no split {split!r}; choose train, val or test")
        if n_images <= 0 or len(size) != 2 or min(size) < 16:
            raise SegbenchError(
                f"synthetic needs n_images > 0 and size >= 16x16, got {n_images}, {size}"
            )
        self.n_images = int(n_images)
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.colour_jitter = float(colour_jitter)
        self._names = [f"synthetic_{split}_{i:04d}" for i in range(self.n_images)]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def names(self) -> list[str]:
        return self._names

    def _read_image(self, index: int) -> np.ndarray:
        return self._generate(index)[0]

    def _read_label(self, index: int) -> np.ndarray:
        return self._generate(index)[1]

    def _generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._cache:
            rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
            self._cache[index] = make_image(rng, self.size, self.colour_jitter)
        return self._cache[index]


def make_image(
    rng: np.random.Generator, size: tuple[int, int], colour_jitter: float = 30.0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic image and its label.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : (int, int)
        (H, W).
    colour_jitter : float
        Standard deviation of the per-image shift of each class colour.

    Returns
    -------
    image : ndarray of uint8, shape (H, W, 3)
    label : ndarray of uint8, shape (H, W)
        Classes 0..3, void (4) on a one-pixel band along shape boundaries.
    """
    h, w = size
    label = np.zeros((h, w), dtype=np.uint8)
    for _ in range(rng.integers(2, 6)):
        cls = rng.integers(1, 4)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.1, 0.3) * min(h, w)
        kind = rng.integers(3)
        if kind == 0:
            rr, cc = ellipse(cy, cx, r, r * rng.uniform(0.6, 1.6), shape=(h, w))
        elif kind == 1:
            half_w = r * rng.uniform(0.7, 1.5)
            rr, cc = polygon(
                [cy - r, cy - r, cy + r, cy + r],
                [cx - half_w, cx + half_w, cx + half_w, cx - half_w],
                shape=(h, w),
            )
        else:
            angles = rng.uniform(0, 2 * np.pi, 3)
            rr, cc = polygon(cy + r * np.sin(angles), cx + r * np.cos(angles), shape=(h, w))
        label[rr, cc] = cls

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    textures = np.empty((4, h, w))
    textures[0] = ndimage.gaussian_filter(rng.normal(size=(h, w)), 4) * 8.0  # smooth ground
    theta = rng.uniform(0, np.pi)
    textures[1] = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / rng.uniform(5, 9))
    period = rng.uniform(6, 10)
    textures[2] = np.sign(np.sin(xx * np.pi / period) * np.sin(yy * np.pi / period))
    textures[3] = np.clip(rng.normal(size=(h, w)), -2, 2)
    textures = np.clip(textures, -1.5, 1.5)

    colours = _MEAN_COLOUR + rng.normal(0, colour_jitter, size=_MEAN_COLOUR.shape)
    texture = np.take_along_axis(textures, label[None].astype(np.intp), axis=0)[0]
    image = colours[label] + 45.0 * texture[..., None]
    image += rng.normal(0, 6, size=image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)

    boundary = np.zeros((h, w), dtype=bool)
    boundary[:, 1:] |= label[:, 1:] != label[:, :-1]
    boundary[1:, :] |= label[1:, :] != label[:-1, :]
    label[boundary] = Synthetic.ignore_index
    return image, label
