"""Any folder of images and index labels as a dataset (``dataset: folder`` in a config).

The layout a user provides::

    FOLDER/
      dataset.yaml        classes: [sky, road, car]     # names, in class-index order
                          palette: [[70, 130, 180], [128, 64, 128], [0, 0, 142]]  # optional
                          ignore_index: 255             # optional, default 255
      images/NAME.jpg     RGB images in any format Pillow opens, each of its own size
      labels/NAME.png     single-channel PNGs of class indices, the size of their image
      splits/train.txt    one NAME (file stem) per line; any split name: splits/<split>.txt
      SHA256SUMS          optional: ``segbench`` hashes it into each row's data identity
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from bench.datasets.base import SegmentationDataset, evenly_spaced
from bench.datasets.io import read_label, read_rgb
from bench.datasets.root import data_root
from bench.errors import SegbenchError

#: The keys ``dataset.yaml`` may hold; anything else is a typo and an error, as in a config.
YAML_KEYS = ("classes", "palette", "ignore_index")
#: Label maps are uint8, so class indices and the ignore index share 0..255.
MAX_INDEX = 255
# A split name becomes a file name under splits/: a plain name, never a path.
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def image_extensions() -> frozenset[str]:
    """Lower-case suffixes (``.jpg``, ``.png``, ...) of the formats Pillow can open.

    Taken from Pillow's own registry rather than a list of ours, so that every format the
    installed Pillow decodes is accepted; save-only formats (PDF) are left out.
    """
    return frozenset(
        ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
    )


def default_palette(n_classes: int) -> np.ndarray:
    """One distinct colour per class: PASCAL VOC's colour map, starting at its index 1.

    VOC's map spreads the bits of the index over the three channels, so it gives 255 distinct
    colours; its index 0 is black, which is skipped so that black stays the colour of void
    (:meth:`~bench.datasets.base.SegmentationDataset.colorize` paints indices past the palette
    black).

    Returns
    -------
    palette : ndarray of uint8, shape (n_classes, 3)
    """
    palette = np.zeros((n_classes, 3), dtype=np.uint8)
    for row, index in enumerate(range(1, n_classes + 1)):
        rgb, c = [0, 0, 0], index
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << bit
            c >>= 3
        palette[row] = rgb
    return palette


def _is_int(value: Any) -> bool:
    # bool is an int in Python, but ``ignore_index: true`` in YAML is a mistake, not 1
    return isinstance(value, int) and not isinstance(value, bool)


def read_dataset_yaml(path: Path) -> tuple[tuple[str, ...], np.ndarray, int]:
    """Read and validate a folder's ``dataset.yaml``.

    Parameters
    ----------
    path : Path
        The ``dataset.yaml`` file.

    Returns
    -------
    class_names : tuple of str
    palette : ndarray of uint8, shape (n_classes, 3)
        The file's, or :func:`default_palette` when it gives none.
    ignore_index : int

    Raises
    ------
    SegbenchError
        Naming ``path`` and the key: a missing file, invalid YAML, an unknown key, ``classes``
        not a non-empty list of distinct names, a ``palette`` that is not one ``[r, g, b]`` of
        0..255 per class, an ``ignore_index`` that is not an integer 0..255 or is a class index.
    """
    if not path.is_file():
        raise SegbenchError(
            f"{path}: dataset.yaml not found (a folder dataset needs one with 'classes:', see "
            "bench/datasets/folder.py)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SegbenchError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SegbenchError(f"{path}: must be a mapping with 'classes:' (and optional keys)")
    unknown = sorted(map(str, set(data) - set(YAML_KEYS)))
    if unknown:
        raise SegbenchError(
            f"{path}: unknown key {', '.join(map(repr, unknown))}; known keys: "
            f"{', '.join(YAML_KEYS)}"
        )

    classes = data.get("classes")
    if not isinstance(classes, list) or not classes:
        raise SegbenchError(f"{path}: 'classes' must be a non-empty list of class names")
    if len(classes) > MAX_INDEX:
        # 256 indices in a uint8 label, one of them kept for the ignore index
        raise SegbenchError(f"{path}: 'classes' lists {len(classes)} names; at most {MAX_INDEX}")
    for i, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip():
            # YAML reads an unquoted yes/no/on/off as a boolean, 12 as a number
            raise SegbenchError(
                f"{path}: classes[{i}] must be a non-empty name, got {name!r} (quote names "
                "that YAML reads as a number or a boolean, e.g. 'no')"
            )
    repeated = sorted({n for n in classes if classes.count(n) > 1})
    if repeated:
        raise SegbenchError(f"{path}: 'classes' repeats {', '.join(map(repr, repeated))}")
    n_classes = len(classes)

    palette_raw = data.get("palette")
    if palette_raw is None:
        palette = default_palette(n_classes)
    else:
        if not isinstance(palette_raw, list) or len(palette_raw) != n_classes:
            got = f"{len(palette_raw)}" if isinstance(palette_raw, list) else repr(palette_raw)
            raise SegbenchError(
                f"{path}: 'palette' must list one [r, g, b] per class ({n_classes}), got {got}"
            )
        for i, colour in enumerate(palette_raw):
            if not (
                isinstance(colour, list)
                and len(colour) == 3
                and all(_is_int(c) and 0 <= c <= 255 for c in colour)
            ):
                raise SegbenchError(
                    f"{path}: palette[{i}] must be [r, g, b] with integers 0..255, got {colour!r}"
                )
        palette = np.array(palette_raw, dtype=np.uint8)

    ignore_index = data.get("ignore_index", MAX_INDEX)
    if not _is_int(ignore_index) or not 0 <= ignore_index <= MAX_INDEX:
        raise SegbenchError(
            f"{path}: 'ignore_index' must be an integer 0..{MAX_INDEX}, got {ignore_index!r}"
        )
    if ignore_index < n_classes:
        raise SegbenchError(
            f"{path}: 'ignore_index' {ignore_index} is the index of class "
            f"{classes[ignore_index]!r}; void needs an index of its own ({n_classes}..{MAX_INDEX})"
        )
    return tuple(classes), palette, ignore_index


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and mode of an image file, from its header alone (no pixel decoded)."""
    try:
        with Image.open(path) as img:
            return img.size, img.mode
    except (UnidentifiedImageError, OSError) as exc:
        raise SegbenchError(f"{path}: not a readable image ({exc})") from exc


class FolderDataset(SegmentationDataset):
    """One split of a user's folder of images and index labels (layout in the module doc).

    Parameters
    ----------
    split : str
        Any split the folder lists: ``splits/<split>.txt``.
    root : str or Path, optional
        The data root; a relative ``path`` is taken under it. Defaults to
        :func:`bench.datasets.root.data_root`.
    resolution : (int, int), optional
        Working resolution (H, W) for the methods; every image is resized to it whatever its own
        size (scoring stays at each image's own size, which :meth:`native_label` returns).
    subset : int, optional
        Keep only this many images, evenly spread over the split list.
    path : str or Path
        The folder (in a config: ``dataset_options: {path: FOLDER}``). A relative path is taken
        under the data root, not the working directory, so that a config means the same folder
        wherever it is run from, as with every other dataset; ``~`` is expanded.

    Raises
    ------
    SegbenchError
        Naming the file: see :func:`read_dataset_yaml`; a split list that is missing, empty,
        repeats a name or names an image or label that does not exist; an image of ``images/``
        without its label; an image or label whose header does not open; a label that is not
        single-channel (mode ``L`` or ``P``) or not the size of its image. Label values are
        checked when a label is read (:meth:`native_label`): each must be a class index or
        ``ignore_index``.

    Notes
    -----
    The split's images and labels are opened once when the split is built, reading only their
    headers (size and mode), so that a wrong file stops a run before any training rather than at
    the first test image; pixels are decoded only when an item is read. Measured: 0.86 s to
    build Stanford Background's 572 ``fold0_trainval`` images laid out as a folder (about 1.5 ms
    per image, on the busy 2-core development machine). EXIF orientation is not applied: images
    are read as stored, as their labels are.

    The images are independent samples (one group, bootstrap block length 1). A row's data
    identity covers the split's names and the class names; add a ``SHA256SUMS`` (``sha256sum``
    output) to the folder to make changed pixels recompute rows too.
    """

    def __init__(
        self,
        split: str = "train",
        root: str | Path | None = None,
        resolution: Sequence[int] | None = None,
        subset: int | None = None,
        path: str | Path | None = None,
    ) -> None:
        super().__init__(split, resolution)
        if path is None or (isinstance(path, str) and not path.strip()):
            raise SegbenchError(
                "dataset 'folder' needs the folder: dataset_options: {path: FOLDER} "
                "(absolute, or relative to the data root)"
            )
        if not isinstance(path, str | Path):
            raise SegbenchError(f"dataset 'folder': 'path' must be a folder name, got {path!r}")
        folder = Path(path).expanduser()
        if not folder.is_absolute():
            folder = data_root(root) / folder
        self.root = folder.resolve()
        self.subset = subset
        if not self.root.is_dir():
            raise SegbenchError(
                f"{self.root}: dataset folder not found (a relative 'path' is taken under the "
                f"data root {data_root(root)})"
            )
        self.class_names, self.palette, self.ignore_index = read_dataset_yaml(
            self.root / "dataset.yaml"
        )
        images = self._index_images()
        names = self._read_split_list(images)
        self._names = [names[i] for i in evenly_spaced(len(names), subset)]
        self._images = {name: images[name] for name in self._names}
        for name in self._names:
            self._check_headers(name)

    # -- building -------------------------------------------------------------------------------
    def _index_images(self) -> dict[str, Path]:
        """Every image of ``images/`` by stem; each must have its label in ``labels/``."""
        image_dir = self.root / "images"
        if not image_dir.is_dir():
            raise SegbenchError(f"{image_dir}: images folder not found")
        extensions = image_extensions()
        images: dict[str, Path] = {}
        # Sorted so that which of two clashing files is named first does not depend on the OS.
        for file in sorted(image_dir.iterdir()):
            # Hidden files (.DS_Store) and notes (README.txt) beside the images are not images.
            if file.name.startswith(".") or file.suffix.lower() not in extensions:
                continue
            if file.stem in images:
                raise SegbenchError(
                    f"{file}: two images named {file.stem!r} ({images[file.stem].name} too); "
                    "a label is matched to its image by name, so keep one"
                )
            images[file.stem] = file
            if not self._label_path(file.stem).is_file():
                raise SegbenchError(
                    f"{file}: image without a label (expected {self._label_path(file.stem)})"
                )
        return images

    def _read_split_list(self, images: dict[str, Path]) -> list[str]:
        split_dir = self.root / "splits"
        if not _SPLIT_NAME.fullmatch(self.split):
            raise SegbenchError(f"{split_dir}: {self.split!r} is not a split name")
        list_file = split_dir / f"{self.split}.txt"
        if not list_file.is_file():
            known = sorted(p.stem for p in split_dir.glob("*.txt")) if split_dir.is_dir() else []
            raise SegbenchError(
                f"{list_file}: split list not found; this folder's splits: "
                f"{', '.join(known) or '(none)'}"
            )
        names: list[str] = []
        seen: set[str] = set()
        for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            where = f"{list_file}:{lineno}"
            # A name is a file stem: anything with a path in it could read outside the folder.
            if Path(name).name != name or name.startswith("."):
                raise SegbenchError(f"{where}: {name!r} is not an image name (a file stem)")
            if name in seen:
                raise SegbenchError(f"{where}: {name!r} is listed twice")
            if name not in images:
                raise SegbenchError(
                    f"{where}: {name!r} names a missing image (no {self.root / 'images'}/"
                    f"{name}.<ext> in a format Pillow reads)"
                )
            seen.add(name)
            names.append(name)
        if not names:
            raise SegbenchError(f"{list_file}: the split list is empty")
        return names

    def _check_headers(self, name: str) -> None:
        """Open image and label of ``name`` lazily: sizes and the label's mode, no pixels."""
        image, label = self._images[name], self._label_path(name)
        (iw, ih), _ = _header(image)
        (lw, lh), mode = _header(label)
        if mode not in ("L", "P"):
            raise SegbenchError(
                f"{label}: a label must be a single-channel PNG of class indices, got mode {mode!r}"
            )
        if (iw, ih) != (lw, lh):
            # A phone photo is often stored sideways with an EXIF rotation; labelling tools
            # that apply it give a label of the turned size, which this file would not match.
            hint = " (turned: EXIF orientation is not applied)" if (iw, ih) == (lh, lw) else ""
            raise SegbenchError(
                f"{label}: label is {lw}x{lh} but its image {image.name} is {iw}x{ih}{hint}"
            )

    # -- the dataset interface ------------------------------------------------------------------
    def _label_path(self, name: str) -> Path:
        return self.root / "labels" / f"{name}.png"

    @property
    def names(self) -> list[str]:
        return self._names

    def image_path(self, index: int) -> Path:
        return self._images[self._names[index]]

    def label_path(self, index: int) -> Path:
        return self._label_path(self._names[index])

    def _describe(self, index: int) -> str:
        return str(self.label_path(index))

    def _read_image(self, index: int) -> np.ndarray:
        return read_rgb(self.image_path(index))

    def _read_label(self, index: int) -> np.ndarray:
        # read_label refuses colour labels; the base class's native_label checks the values
        return read_label(self.label_path(index))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", path={str(self.root)!r})"
