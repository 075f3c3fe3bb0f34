"""Stanford Background (iccv09Data), 8 classes, 715 outdoor scenes of 51 different sizes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.datasets.base import SegmentationDataset, evenly_spaced
from bench.datasets.io import read_label, read_rgb
from bench.datasets.root import data_root
from bench.errors import SegbenchError

SPLITS = ("train", "val", "trainval", "test")
N_FOLDS = 5


class StanfordBackground(SegmentationDataset):
    """One split of one fold of Stanford Background (Gould et al., ICCV 2009).

    Five-fold cross-validation, as the paper and those comparing with it report: each fold holds
    out 143 of the 715 images as ``test`` and keeps the other 572 as ``trainval``, itself split
    into 515 ``train`` and 57 ``val`` images for model selection. The folds are segbench's own
    (the paper published none); the data folder's README says how they were drawn.

    Parameters
    ----------
    split : {"train", "val", "trainval", "test"}
    root : str or Path, optional
        The data root (one folder per dataset); the data is ``root/stanford_background``.
        Defaults to :func:`bench.datasets.root.data_root`.
    resolution : (int, int), optional
        Working resolution (H, W) for the methods. Every image is resized to it whatever its own
        size and aspect ratio (portrait images are stretched); scoring stays at each image's
        own size, which :meth:`native_label` returns.
    subset : int, optional
        Keep only this many images, evenly spread over the split (for quick profiles and tests).
    fold : int
        Which of the five folds, 0..4 (in a config: ``dataset_options: {fold: 2}``).

    Notes
    -----
    Images are about 320x240 but of 51 different sizes (one side 320 or 240 or less, some
    portrait), so without ``resolution`` the items of a split do not stack into one array.
    Label 255 is void (unknown in the original regions files): ignored in training and scoring.
    """

    class_names = (
        "sky", "tree", "road", "grass", "water", "building", "mountain", "foreground object",
    )  # fmt: skip
    #: segbench's own colours (the dataset defines none), one per class; void (255) is past the
    #: palette, so it paints black.
    palette = np.array(
        [
            [110, 170, 230], [30, 110, 40], [120, 120, 120], [140, 210, 80], [20, 60, 190],
            [180, 60, 40], [140, 100, 60], [240, 200, 0],
        ],
        dtype=np.uint8,
    )  # fmt: skip
    ignore_index = 255
    folder = "stanford_background"
    # ``groups`` stays the base class's single group: the images are independent (block length
    # 1), and the runner's bootstrap resamples within each group, so one group per image would
    # never resample anything and give a zero-width interval.

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        resolution: Sequence[int] | None = None,
        subset: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__(split, resolution)
        if split not in SPLITS:
            raise SegbenchError(
                f"Stanford Background has no split {split!r}; choose one of {', '.join(SPLITS)}"
            )
        # bool is an int in Python, but ``fold: true`` in a config is a mistake, not fold 1.
        if isinstance(fold, bool) or not isinstance(fold, int | np.integer):
            raise SegbenchError(f"fold must be an integer 0..{N_FOLDS - 1}, got {fold!r}")
        if not 0 <= fold < N_FOLDS:
            raise SegbenchError(f"fold must be 0..{N_FOLDS - 1}, got {fold}")
        self.fold = int(fold)
        self.root = data_root(root) / self.folder
        self.subset = subset
        if not self.root.is_dir():
            raise SegbenchError(
                f"{self.root}: Stanford Background not found (is the data root right? set "
                "SEGBENCH_DATA or --data-root; segbench cannot download this dataset yet)"
            )
        names = self._read_split_list()
        self._names = [names[i] for i in evenly_spaced(len(names), subset)]

    def _read_split_list(self) -> list[str]:
        list_file = self.root / "splits" / f"fold{self.fold}_{self.split}.txt"
        if not list_file.is_file():
            raise SegbenchError(f"{list_file}: Stanford Background split list not found")
        names: list[str] = []
        seen: set[str] = set()
        for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            where = f"{list_file}:{lineno}"
            # A name is a file stem: anything with a path in it could read outside the folder.
            if Path(name).name != name or name.startswith("."):
                raise SegbenchError(f"{where}: {name!r} is not an image name")
            if name in seen:
                raise SegbenchError(f"{where}: {name!r} is listed twice")
            # Checked here, not when the image is first read, so that a wrong list stops a run
            # before any training rather than at the first test image.
            for path in (self._image_path(name), self._label_path(name)):
                if not path.is_file():
                    raise SegbenchError(f"{where}: {name!r} names a missing file {path}")
            seen.add(name)
            names.append(name)
        if not names:
            raise SegbenchError(f"{list_file}: the split list is empty")
        return names

    def _image_path(self, name: str) -> Path:
        return self.root / "images" / f"{name}.jpg"

    def _label_path(self, name: str) -> Path:
        return self.root / "labels" / f"{name}.png"

    @property
    def names(self) -> list[str]:
        return self._names

    def image_path(self, index: int) -> Path:
        return self._image_path(self._names[index])

    def label_path(self, index: int) -> Path:
        return self._label_path(self._names[index])

    def _describe(self, index: int) -> str:
        return str(self.label_path(index))

    def _read_image(self, index: int) -> np.ndarray:
        return read_rgb(self.image_path(index))

    def _read_label(self, index: int) -> np.ndarray:
        return read_label(self.label_path(index))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", fold={self.fold})"
