"""Reading a dataset's image files and writing PNG labels, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.errors import SegbenchError


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise SegbenchError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()  # decode now, so that a truncated file fails here and not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # Say which format was expected: labels are PNG, but some datasets store JPEG images.
        suffix = path.suffix.lstrip(".").upper()
        kind = "PNG" if suffix == "PNG" else f"{suffix} image".lstrip()
        raise SegbenchError(f"{path}: not a readable {kind} ({exc})") from exc
    return img


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an RGB image.

    Parameters
    ----------
    path : str or Path
        PNG (or any format Pillow reads) file.

    Returns
    -------
    image : ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    SegbenchError
        If the file is missing, truncated or not an image.
    """
    img = _open(Path(path))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label image whose pixel values are class indices.

    Parameters
    ----------
    path : str or Path
        PNG of mode ``L`` (or ``P``; the palette indices are taken as the classes).

    Returns
    -------
    label : ndarray of uint8, shape (H, W)

    Raises
    ------
    SegbenchError
        If the file is missing, unreadable, or has colour channels (a colourised label is not a
        label map).
    """
    path = Path(path)
    img = _open(path)
    if img.mode not in ("L", "P"):
        raise SegbenchError(
            f"{path}: a label must be a single-channel PNG of class indices, got mode {img.mode!r}"
        )
    return np.array(img, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)


def write_label(path: str | Path, label: np.ndarray) -> None:
    """Write a label map as a single-channel PNG (the format :func:`read_label` reads)."""
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D, got shape {label.shape}")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError("label values must fit in uint8")
        label = label.astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label).save(path)  # uint8 2-D -> mode "L"
