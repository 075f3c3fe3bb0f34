"""What every dataset of segbench offers, whatever its files look like."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bench.errors import SegbenchError


class SegmentationDataset:
    """A split of a semantic-segmentation dataset.

    Indexing gives ``(image, label, name)``: ``image`` uint8 HxWx3, ``label`` uint8 HxW whose
    values are class indices in ``0..n_classes-1`` or ``ignore_index``, and the image's name
    (the file stem). It has ``__len__`` and ``__getitem__``, so a torch ``DataLoader`` can batch
    it as a map-style dataset; it does not subclass torch's ``Dataset``, so that the harness
    (loading, scoring, reports) starts without importing torch.

    ``resolution`` (``(H, W)`` or None for native) resizes image (bilinear, antialiased) and
    label (nearest) for the methods. Scoring always uses :meth:`native_label`, so numbers from a
    method that works at a reduced resolution stay comparable with full-resolution ones.

    Subclasses set ``class_names``, ``palette``, ``ignore_index`` and implement ``names``,
    ``_read_image``, ``_read_label`` and ``_describe``. Their constructors take ``split``,
    ``root`` (the data root; a dataset without files ignores it), ``resolution`` and ``subset``
    (keep this many images) as keywords, so that generic code (the runner, the command line, the
    report) builds any dataset the same way; anything else is a dataset option of the config.
    Those with files set ``folder`` too, and ``manifest``/``download_url`` where segbench ships
    a manifest or knows a download (``segbench data``).
    """

    class_names: tuple[str, ...] = ()
    palette: np.ndarray = np.zeros((0, 3), dtype=np.uint8)
    ignore_index: int = 255
    #: Sub-folder of the data root that holds the files; None for a generated dataset.
    folder: str | None = None
    #: SHA-256 manifest shipped with segbench; None: the folder's own ``SHA256SUMS``.
    manifest: Path | None = None
    #: Base URL ``segbench data download`` fetches the folder from; None: no download.
    download_url: str | None = None

    def __init__(self, split: str, resolution: Sequence[int] | None = None) -> None:
        self.split = split
        if resolution is not None:
            if len(resolution) != 2 or min(int(r) for r in resolution) <= 0:
                raise SegbenchError(f"resolution must be [height, width], got {resolution!r}")
            resolution = (int(resolution[0]), int(resolution[1]))
        self.resolution = resolution
        self._frequencies: np.ndarray | None = None

    # -- to implement -----------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        raise NotImplementedError

    def _read_image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _read_label(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _describe(self, index: int) -> str:
        """Where item ``index`` comes from (a file path), for error messages."""
        return f"{type(self).__name__}[{self.split}][{index}]"

    #: Consecutive images per block of the bootstrap over this dataset's images (1: the images
    #: are independent samples; video datasets set more, see bench.metrics.BLOCK_LENGTH).
    block_length: int = 1

    @property
    def groups(self) -> list[str]:
        """The group of each image, in the order of :attr:`names`: a video sequence, whose
        frames are resampled in blocks of :attr:`block_length` within it.

        By default all images form one group of independent images.
        """
        return ["all"] * len(self)

    # -- shared behaviour ---------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        image = self.native_image(index)
        label = self.native_label(index)
        if image.shape[:2] != label.shape:
            raise SegbenchError(
                f"{self._describe(index)}: label is {label.shape[1]}x{label.shape[0]} but its "
                f"image is {image.shape[1]}x{image.shape[0]}"
            )
        if self.resolution is not None and image.shape[:2] != self.resolution:
            image = resize_image(image, self.resolution)
            label = resize_label(label, self.resolution)
        return image, label, self.names[index]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        for i in range(len(self)):
            yield self[i]

    def native_image(self, index: int) -> np.ndarray:
        """The image at its stored resolution."""
        return self._read_image(index)

    def native_label(self, index: int) -> np.ndarray:
        """The label at its stored resolution (what the evaluator scores), validated."""
        label = self._read_label(index)
        bad = (label >= self.n_classes) & (label != self.ignore_index)
        if bad.any():
            values = sorted(set(np.unique(label[bad]).tolist()))
            raise SegbenchError(
                f"{self._describe(index)}: label values {values} are outside "
                f"0..{self.n_classes - 1} and are not the ignore index {self.ignore_index}"
            )
        return label

    def image(self, index: int) -> np.ndarray:
        """The image at the working resolution (what a method sees)."""
        image = self.native_image(index)
        if self.resolution is not None and image.shape[:2] != self.resolution:
            image = resize_image(image, self.resolution)
        return image

    def class_frequencies(self) -> np.ndarray:
        """Share of each class among the split's non-void pixels (native resolution).

        Returns
        -------
        freq : ndarray of float64, shape (n_classes,)
            Sums to 1 (unless the split has no labelled pixel at all).
        """
        if self._frequencies is None:
            counts = np.zeros(self.n_classes, dtype=np.int64)
            for i in range(len(self)):
                label = self.native_label(i)
                counts += np.bincount(label.ravel(), minlength=256)[: self.n_classes]
            total = counts.sum()
            self._frequencies = counts / total if total else counts.astype(np.float64)
        return self._frequencies

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """Paint a label map in the dataset's palette (void in the palette's last colour)."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: len(self.palette)] = self.palette
        return lut[label]

    def __repr__(self) -> str:
        res = "native" if self.resolution is None else f"{self.resolution[0]}x{self.resolution[1]}"
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, resolution={res})"


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``size`` = (H, W), bilinear with antialiasing."""
    h, w = size
    return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label map to ``size`` = (H, W), nearest neighbour (no invented classes)."""
    h, w = size
    return np.array(Image.fromarray(label).resize((w, h), Image.Resampling.NEAREST))


def evenly_spaced(n_total: int, n: int | None) -> np.ndarray:
    """Indices of ``n`` items spread over ``n_total`` (all when ``n`` is None or too large).

    CamVid's splits are ordered video sequences: the first ``n`` images would all come from one
    sequence, so subsets are spread evenly instead.
    """
    if n is None or n >= n_total:
        return np.arange(n_total)
    if n <= 0:
        raise SegbenchError(f"subset must be a positive number of images, got {n}")
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(int))
