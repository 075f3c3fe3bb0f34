"""Publishing a report: render everything aside, then move it into the store at once.

A kill must leave the old report or the new one, never a 0-byte CSV or a README describing rows
the CSV lacks. So :func:`write_report <bench.report.write_report>` renders every file into a
staging folder inside the store (``<store>/.report-staging-<pid>-<random>/``, on the store's
file system so that moving is a rename) and only when all of them are written, publishes:

1. ``figures/``: the staged folder (the new figures, plus hard links to every file of the old
   folder that the report did not make) replaces the old folder by two renames
   (``figures`` -> ``.figures-old-...``, staged -> ``figures``). Files that appeared in the old
   folder meanwhile, and any file the report did not make, are then moved into the new one.
2. ``results.parquet``, ``results.csv``, then ``README.md``: one ``os.replace`` each.

A kill while rendering leaves every published file as it was (the staging folder is removed
then, or by the next run). The window where a kill leaves a mixture is the handful of renames
of step 1 and 2 (microseconds, no data written); the next ``segbench report`` repairs it, and
also moves back into ``figures/`` any file the report did not make that a kill left in a
``.figures-old-*`` folder.

Which figures are the report's: those listed in ``figures/.report_manifest.json``, which every
report writes. A ``figures/`` folder without a manifest (written by an older report) counts
the files named like report figures (:data:`bench.report.figures.REPORT_FIGURE`) as the
report's, except names containing ``upsampling`` (the upsampling study's). Anything else in
``figures/`` (the study's figures, a user's notes) is never deleted; ``benchmarks/`` and
``rows/`` are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

from bench.report.figures import REPORT_FIGURE

log = logging.getLogger(__name__)

MANIFEST = ".report_manifest.json"
#: The top-level files of a report, in the order they are published (README last: it is what
#: readers open, and it must not describe rows the tables lack).
TABLE_FILES = ("results.parquet", "results.csv", "README.md")
_STAGING = ".report-staging-"
_OLD_FIGURES = ".figures-old-"


def _tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(name: str, prefix: str) -> bool:
    """Whether the process that made ``<prefix><pid>-<random>`` still runs."""
    try:
        pid = int(name[len(prefix) :].split("-")[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def new_staging(store: Path) -> Path:
    """A fresh staging folder (with an empty ``figures/``) inside ``store``."""
    staging = Path(store) / f"{_STAGING}{_tag()}"
    (staging / "figures").mkdir(parents=True)
    return staging


def report_figures(figures_dir: Path) -> set[str]:
    """Names of the files of ``figures_dir`` the report made (see the module docstring)."""
    manifest = figures_dir / MANIFEST
    if manifest.is_file():
        try:
            return set(json.loads(manifest.read_text(encoding="utf-8"))["figures"]) | {MANIFEST}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s unreadable (%s): judging report figures by name", manifest, exc)
    if not figures_dir.is_dir():
        return set()
    return {
        p.name
        for p in figures_dir.iterdir()
        if REPORT_FIGURE.match(p.name) and "upsampling" not in p.name
    }


def write_manifest(figures_dir: Path, names: list[str]) -> None:
    """Record which files of ``figures_dir`` this report wrote."""
    data = {"written_by": "segbench report", "figures": sorted(names)}
    (figures_dir / MANIFEST).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _keep_foreign(old: Path, new: Path, link: bool) -> None:
    """Put every file of ``old`` the report did not make into ``new``.

    ``link``: hard-link (or copy) them and leave ``old`` as it is, else move them over.
    """
    if not old.is_dir():
        return
    # Hidden files go along too: a study's half-written ``.<name>.tmp`` (bench.rows.atomic_write)
    # must be where its final rename looks for it.
    ours = report_figures(old) | {MANIFEST}
    for entry in sorted(old.iterdir()):
        if entry.name in ours:
            continue
        target = new / entry.name
        if link:
            if entry.is_file() and not target.exists():
                try:
                    os.link(entry, target)
                except OSError:
                    shutil.copy2(entry, target)
        elif entry.is_dir():
            if not target.exists():
                os.replace(entry, target)
        else:
            # The old folder's copy is the latest: the study may have rewritten it after the
            # link was made.
            os.replace(entry, target)


def recover(store: Path) -> None:
    """Clean what a killed report left in ``store`` (staging folders, old figure folders).

    Files a report did not make that a kill left in an old figures folder go back to
    ``figures/``. Folders of reports still running (their process id is alive) are left alone.
    """
    store = Path(store)
    if not store.is_dir():
        return
    for path in sorted(store.iterdir()):
        if path.name.startswith(_STAGING) and not _pid_alive(path.name, _STAGING):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(_OLD_FIGURES) and not _pid_alive(path.name, _OLD_FIGURES):
            (store / "figures").mkdir(exist_ok=True)
            _keep_foreign(path, store / "figures", link=False)
            shutil.rmtree(path, ignore_errors=True)


def publish(staging: Path, store: Path) -> None:
    """Move a completely rendered report from ``staging`` into ``store`` (module docstring).

    ``staging`` holds ``figures/`` (with its manifest) and the files of :data:`TABLE_FILES`;
    it is removed afterwards.
    """
    store = Path(store)
    figures, staged = store / "figures", staging / "figures"
    _keep_foreign(figures, staged, link=True)
    old = store / f"{_OLD_FIGURES}{_tag()}"
    if figures.exists():
        os.rename(figures, old)
    os.rename(staged, figures)
    _keep_foreign(old, figures, link=False)
    for name in TABLE_FILES:
        os.replace(staging / name, store / name)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
