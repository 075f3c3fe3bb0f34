"""Fetch a dataset over HTTP, verify every SHA-256 before anything is used, resume partial files.

Each file is downloaded to ``NAME.part`` (continued with an HTTP ``Range`` request when a partial
file exists), hashed, and only moved to ``NAME`` when its SHA-256 matches the manifest shipped
with segbench. A file whose hash differs is deleted and reported; the other files are kept, so a
rerun only fetches what is still missing. The standard library's ``urllib`` is enough for this
(no new dependency for a few hundred GET requests).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from bench.datasets.camvid import CamVid
from bench.errors import SegbenchError

# CamVid's source and shipped manifest live on its class (bench.datasets.camvid); the old names
# stay for callers of this module.
CAMVID_URL = CamVid.download_url
CAMVID_MANIFEST = CamVid.manifest
_CHUNK = 1 << 16


def read_manifest(path: str | Path) -> dict[str, str]:
    """Parse ``sha256sum`` output into {relative path: hex digest}.

    Raises
    ------
    SegbenchError
        On a missing file, a malformed line or a path that leaves the dataset folder.
    """
    path = Path(path)
    if not path.is_file():
        raise SegbenchError(f"{path}: manifest not found")
    manifest = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise SegbenchError(f"{path}:{lineno}: expected 'SHA256  PATH', got {line!r}")
        rel = parts[1].strip().lstrip("*").removeprefix("./")
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise SegbenchError(f"{path}:{lineno}: {rel!r} points outside the dataset folder")
        manifest[rel] = parts[0].lower()
    return manifest


#: Datasets published as one archive that segbench converts (name -> module with ``URL``,
#: ``MANIFEST`` and ``download(folder, url, manifest)``), imported only when asked for.
ARCHIVES: dict[str, str] = {"stanford_background": "bench.datasets.stanford_download"}


def archive_module(name: str):  # noqa: ANN201 - a module
    """The converter module of dataset ``name`` (see :data:`ARCHIVES`), None if it has none."""
    return importlib.import_module(ARCHIVES[name]) if name in ARCHIVES else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(folder: str | Path, manifest: dict[str, str], progress: bool = True) -> list[str]:
    """Check every file of ``manifest`` under ``folder``.

    Returns
    -------
    problems : list of str
        One line per missing or mismatching file (empty when all is well).
    """
    folder = Path(folder)
    problems = []
    for rel, digest in tqdm(manifest.items(), desc="verify", unit="file", disable=not progress):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: SHA-256 differs from the manifest (corrupt or changed)")
    return problems


def _fetch(url: str, dest: Path, digest: str | None, timeout: float) -> str:
    """Download one file; returns "" or a problem line. Never leaves an unverified ``dest``.

    ``digest`` None: no published hash to check (an archive whose *contents* are verified
    after conversion, :mod:`bench.datasets.stanford_download`); the file is only completed.
    """
    if dest.is_file() and (digest is None or sha256_file(dest) == digest):
        return ""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            # 206: the server continues where we stopped; 200: it sends the whole file again.
            mode = "ab" if offset and response.status == 206 else "wb"
            expected = int(response.headers.get("Content-Length") or -1)
            with open(part, mode) as f:
                before = f.tell()
                shutil.copyfileobj(response, f, _CHUNK)
                received = f.tell() - before
            # http.client ends a sized read early, without an error, when the link drops.
            if 0 <= received < expected:
                return (
                    f"{url}: download interrupted after {received} of {expected} bytes; "
                    "rerun to resume"
                )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part is already complete (or longer than the file)
            pass
        else:
            return f"{url}: HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return f"{url}: download interrupted ({exc}); rerun to resume"
    got = digest if digest is None else sha256_file(part)
    if got != digest:
        part.unlink()
        return f"{dest}: SHA-256 {got[:12]}... differs from the manifest {digest[:12]}...: refused"
    os.replace(part, dest)
    return ""


def download(
    base_url: str,
    dest: str | Path,
    manifest: dict[str, str],
    workers: int = 8,
    timeout: float = 60.0,
) -> None:
    """Fetch every file of ``manifest`` from ``base_url`` into ``dest``, verified.

    Parameters
    ----------
    base_url : str
        URL of the dataset folder; ``base_url + relative path`` is each file.
    dest : str or Path
        The dataset folder to fill (created if needed).
    manifest : dict
        {relative path: SHA-256}, e.g. from :func:`read_manifest`.
    workers : int
        Parallel downloads.
    timeout : float
        Seconds without data before a request is given up (the file is resumed on rerun).

    Raises
    ------
    SegbenchError
        Listing every file that could not be fetched or failed verification, after all the
        others were fetched and kept.
    """
    dest = Path(dest)
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    jobs = [(base_url + rel, dest / rel, digest) for rel, digest in manifest.items()]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(
                pool.map(lambda job: _fetch(*job, timeout=timeout), jobs),
                total=len(jobs), desc="download", unit="file",
            )
        )  # fmt: skip
    problems = [r for r in results if r]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SegbenchError(
            f"{len(problems)} of {len(jobs)} files could not be fetched and verified:\n  "
            f"{shown}{more}"
        )
    # Keep the manifest beside the data so that `segbench data check` works on this copy.
    lines = "".join(f"{d}  {r}\n" for r, d in manifest.items())
    (dest / "SHA256SUMS").write_text(lines)


def folder_manifest(folder: Path, shipped: Path | None = None) -> dict[str, str]:
    """The manifest a dataset folder is checked against.

    Parameters
    ----------
    folder : Path
        The dataset's folder under the data root.
    shipped : Path, optional
        A manifest shipped with segbench (the class's ``manifest``): it is trusted over the
        folder's own, which came with the data. None: the folder's ``SHA256SUMS``.

    Raises
    ------
    SegbenchError
        If the manifest is missing (naming it) or malformed.
    """
    path = shipped if shipped is not None else folder / "SHA256SUMS"
    if shipped is None and not path.is_file():
        # Only datasets segbench does not download get here (see bench.cli): say so.
        raise SegbenchError(
            f"{path}: manifest not found (is the data root right? set SEGBENCH_DATA or "
            "--data-root; segbench does not download this dataset: copy it there with its "
            "SHA256SUMS)"
        )
    return read_manifest(path)


def ensure(folder: Path, manifest: dict[str, str], url: str | None) -> Path:
    """``folder`` complete and verified: fetched from ``url`` first if any file is missing.

    Parameters
    ----------
    folder : Path
        The dataset's folder under the data root.
    manifest : dict
        {relative path: SHA-256} of every file.
    url : str or None
        Base URL of the dataset folder; None when segbench knows no download for it.

    Raises
    ------
    SegbenchError
        If files are missing and there is no ``url``, or a file cannot be fetched, or a present
        file fails verification.
    """
    missing = [rel for rel in manifest if not (folder / rel).is_file()]
    if missing:
        if url is None:
            raise SegbenchError(
                f"{folder}: {len(missing)} of {len(manifest)} files missing (first "
                f"{missing[0]}) and segbench cannot download this dataset yet; copy it there or "
                "point SEGBENCH_DATA / --data-root at a data root that holds it"
            )
        download(url, folder, manifest)
    problems = verify(folder, manifest)
    if problems:
        raise SegbenchError(
            f"{folder}: {len(problems)} files fail verification:\n  " + "\n  ".join(problems[:20])
        )
    return folder
