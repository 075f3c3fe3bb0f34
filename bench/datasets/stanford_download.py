"""Download Stanford Background from its Stanford address and convert it as the shared copy is.

The original is one archive, ``iccv09Data.tar.gz`` (Gould, Fulton and Koller 2009), holding
``iccv09Data/images/NAME.jpg``, ``iccv09Data/labels/NAME.regions.txt`` (a text matrix of class
indices, -1 unknown; ``surfaces`` and ``layers`` files beside it are not used) and
``iccv09Data/horizons.txt``. :func:`download` makes from it exactly the folder segbench reads
(``../shared/datasets/stanford_background/README.md`` describes it):

* ``images/NAME.jpg`` and ``horizons.txt`` byte for byte;
* ``labels/NAME.png``: the regions matrix as a uint8 PNG with -1 written as 255 (void), encoded
  by the pinned Pillow with ``optimize=True``, which reproduces the shared copy's bytes;
* ``splits/fold{k}_{train,val,trainval,test}.txt`` from :func:`fold_splits`;

and checks every file against the manifest shipped with segbench
(``bench/datasets/stanford_background.sha256``) before anything is put in place: a corrupt or
tampered archive is refused and nothing of the dataset folder is touched.

The archive itself has no published checksum, so it is not trusted on its own: what is verified
is everything made from it. Members are read one by one (never ``extractall``): only the regular
files named above are used, so an archive with other paths (``../``, links) cannot write outside
the staging folder.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.datasets.download import _fetch, read_manifest, verify
from bench.errors import SegbenchError

URL = "http://dags.stanford.edu/data/iccv09Data.tar.gz"
#: SHA-256 of every file of the converted folder (the shared copy's ``SHA256SUMS``).
MANIFEST = Path(__file__).with_name("stanford_background.sha256")
N_CLASSES = 8
VOID = 255
N_FOLDS = 5
#: The seed of the fold permutation, and the sizes of each fold's splits (715 images).
FOLD_SEED = 2009
N_TEST, N_VAL = 143, 57
_MEMBER = re.compile(
    r"iccv09Data/(?:(images)/(\w+)\.jpg|(labels)/(\w+)\.regions\.txt|horizons\.txt)"
)
_CHUNK = 1 << 16


def fold_splits(names: list[str], n_folds: int = N_FOLDS) -> dict[str, list[str]]:
    """The split files of the five folds, ``{"fold0_test": [names, sorted], ...}``.

    One permutation of the sorted names, ``numpy.random.default_rng(2009)``; fold k tests
    positions ``143k .. 143k+142`` of it; the other images, in permutation order, are
    ``trainval``, whose first 57 are ``val`` and the rest ``train``. With fewer than 715 names
    (tests) the test block is ``len(names) // n_folds`` and val a tenth of trainval.
    """
    names = sorted(names)
    perm = np.random.default_rng(FOLD_SEED).permutation(len(names))
    n_test = N_TEST if len(names) == 715 else len(names) // n_folds
    out = {}
    for k in range(n_folds):
        test = perm[n_test * k : n_test * (k + 1)]
        rest = np.concatenate([perm[: n_test * k], perm[n_test * (k + 1) :]])
        n_val = N_VAL if len(names) == 715 else len(rest) // 10
        parts = {"train": rest[n_val:], "val": rest[:n_val], "trainval": rest, "test": test}
        for split, idx in parts.items():
            out[f"fold{k}_{split}"] = sorted(names[i] for i in idx)
    return out


def regions_to_label(text: str, where: str) -> np.ndarray:
    """A ``NAME.regions.txt`` matrix as a uint8 label map, -1 (unknown) as 255.

    Raises
    ------
    SegbenchError
        Naming ``where``: ragged rows, a value that is not an integer, or one outside -1..7.
    """
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows or len({len(r) for r in rows}) != 1:
        raise SegbenchError(f"{where}: not a matrix (rows of different lengths, or empty)")
    try:
        values = np.array(rows, dtype=np.int64)
    except ValueError as exc:
        raise SegbenchError(f"{where}: a value is not an integer ({exc})") from exc
    bad = (values < -1) | (values >= N_CLASSES)
    if bad.any():
        raise SegbenchError(
            f"{where}: value {int(values[bad][0])} is neither a class 0..{N_CLASSES - 1} nor -1"
        )
    return np.where(values < 0, VOID, values).astype(np.uint8)


def encode_label(label: np.ndarray) -> bytes:
    """PNG bytes of a uint8 label map, as the shared copy was written (Pillow, optimize)."""
    buffer = io.BytesIO()
    Image.fromarray(label, mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def convert(archive: Path, staging: Path) -> int:
    """Write the dataset folder's files made from ``archive`` into ``staging``.

    Returns
    -------
    int
        The number of images.

    Raises
    ------
    SegbenchError
        Naming the archive when it is not a readable ``.tar.gz`` (truncated, corrupt) or holds
        no images, or naming a member whose labels do not parse.
    """
    images: list[str] = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tqdm(tar, desc="convert", unit="file", leave=False):
                match = _MEMBER.fullmatch(member.name)
                if match is None or not member.isfile():
                    continue  # surfaces, layers, folders; links and odd paths are never used
                data = tar.extractfile(member).read()
                if match.group(1):
                    name = match.group(2)
                    images.append(name)
                    _write(staging / "images" / f"{name}.jpg", data)
                elif match.group(3):
                    name = match.group(4)
                    where = f"{archive}: {member.name}"
                    label = regions_to_label(data.decode("ascii", "replace"), where)
                    _write(staging / "labels" / f"{name}.png", encode_label(label))
                else:
                    _write(staging / "horizons.txt", data)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SegbenchError(
            f"{archive}: not a readable iccv09Data.tar.gz ({type(exc).__name__}: {exc}); "
            "delete it and rerun to download it again"
        ) from exc
    if not images:
        raise SegbenchError(f"{archive}: no iccv09Data/images/*.jpg in it: not iccv09Data")
    for split, names in fold_splits(images).items():
        _write(staging / "splits" / f"{split}.txt", "".join(f"{n}\n" for n in names).encode())
    return len(images)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def fetch(url: str, archive: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``archive``, through ``archive.part`` resumed with HTTP ``Range``.

    The archive has no published checksum: :func:`bench.datasets.download._fetch` only
    completes it; what is made from it is verified (:func:`download`).

    Raises
    ------
    SegbenchError
        On an HTTP error or an interrupted transfer (the ``.part`` file is kept: rerun resumes).
    """
    problem = _fetch(url, archive, None, timeout)
    if problem:
        raise SegbenchError(problem)


def download(
    folder: str | Path,
    url: str = URL,
    manifest: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch, convert and verify Stanford Background into ``folder``.

    The archive is kept beside the folder (``<folder>.tar.gz``) so that a failed conversion
    does not download it again; the files are made in ``<folder>.staging`` and moved into
    ``folder`` only once every one matches ``manifest``.

    Parameters
    ----------
    folder : str or Path
        The dataset folder under the data root (``.../stanford_background``).
    url : str
        Where ``iccv09Data.tar.gz`` is (the Stanford address by default).
    manifest : dict, optional
        {relative path: SHA-256}; default: the manifest shipped with segbench.

    Raises
    ------
    SegbenchError
        If the download fails, the archive is unreadable, or any made file differs from the
        manifest (listing them; the dataset folder is then left as it was).
    """
    folder = Path(folder)
    manifest = read_manifest(MANIFEST) if manifest is None else manifest
    archive = folder.with_name(folder.name + ".tar.gz")
    if not archive.is_file():
        fetch(url, archive, timeout)
    staging = folder.with_name(folder.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        convert(archive, staging)
        problems = verify(staging, manifest)
        if problems:
            shown = "\n  ".join(
                p.replace(str(staging), str(archive) + " ->") for p in problems[:20]
            )
            raise SegbenchError(
                f"{archive}: {len(problems)} of {len(manifest)} files made from it do not match "
                f"the shipped manifest, refused (nothing in {folder} was changed); delete the "
                f"archive to download it again:\n  {shown}"
            )
        for rel in manifest:
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
        # Keep the manifest beside the data: `segbench data check` verifies this copy.
        (folder / "SHA256SUMS").write_text("".join(f"{d}  {r}\n" for r, d in manifest.items()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
