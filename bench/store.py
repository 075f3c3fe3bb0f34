"""The two result stores and the one explicit step that turns a user's rows into the reference.

* ``runs/results/`` (git-ignored): what ``segbench run`` and ``make bench`` write on a user's
  machine, with its own report comparing it with the reference.
* ``results/`` (committed): the published reference the README cites. Only
  :func:`promote` (``segbench promote``, ``make reference``) or ``segbench run --reference``
  write there.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from bench.errors import SegbenchError
from bench.provenance import computed_by_other_code
from bench.rows import read_row, row_paths

log = logging.getLogger(__name__)

#: Files of a store that studies write beside the report (copied with the rows).
STUDY_FILES = ("benchmarks/upsampling.json", "benchmarks/upsampling.md")
STUDY_FIGURES = "figures/upsampling_*.png"


def groups(store: Path) -> list[Path]:
    """The row groups (``rows/<profile>/<config>``) of a store that hold rows."""
    return sorted({p.parent for p in row_paths(store)})


def promote(source: Path, reference: Path, configs: list[str] | None = None) -> list[Path]:
    """Copy whole row groups of ``source`` over the same groups of ``reference``.

    A group is replaced entirely (rows of methods no longer in the config do not linger), with
    one exception: a unit of work (a method's row and its CRF row, for one fold and seed) whose
    ``source`` rows were computed by other code than this checkout's while the reference's are
    this code's keeps the reference's files, and a warning names it; promoting must never turn
    a current reference row into an older computation of the same thing. Every row is read and
    checked before anything is copied, so a bad row leaves the reference as it was.

    Parameters
    ----------
    source, reference : Path
        Stores (folders holding ``rows/``).
    configs : list of str, optional
        Config names to promote (default: every group of ``source``).

    Returns
    -------
    list of Path
        The reference group folders written.
    """
    chosen = [g for g in groups(source) if configs is None or g.name in configs]
    if configs:
        missing = sorted(set(configs) - {g.name for g in chosen})
        if missing:
            raise SegbenchError(f"{source}: no rows of config(s) {', '.join(missing)} to promote")
    if not chosen:
        raise SegbenchError(f"{source}: no rows to promote (run `make bench` first)")
    for group in chosen:
        for path in sorted(group.glob("*.json")):
            read_row(path)  # raises, naming the file, before anything is touched
    written = []
    for group in chosen:
        target = reference / group.relative_to(source)
        staged = target.with_name(f".{target.name}.promote")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(group, staged, ignore=shutil.ignore_patterns(".lock", ".*.tmp"))
        for stem in _current_units_kept(group, target):
            _replace_unit(staged, target, stem)
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staged.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        log.info("promoted %s -> %s", group, target)
        written.append(target)
    for rel in STUDY_FILES:
        if (source / rel).is_file():
            (reference / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, reference / rel)
    for fig in source.glob(STUDY_FIGURES):
        (reference / "figures").mkdir(parents=True, exist_ok=True)
        shutil.copy2(fig, reference / "figures" / fig.name)
    return written


def _unit_of(row: dict) -> tuple:
    return (row.get("crf_of") or row["method"], row.get("fold"), row.get("seed"))


def _current_units_kept(group: Path, target: Path) -> list[str]:
    """Row file stems of ``target`` to keep: units stale in ``group`` but current in ``target``."""
    if not target.is_dir():
        return []

    def units(folder: Path) -> dict[tuple, dict[str, dict]]:
        out: dict[tuple, dict[str, dict]] = {}
        for path in sorted(folder.glob("*.json")):
            row = read_row(path)
            out.setdefault(_unit_of(row), {})[path.name.removesuffix(".json")] = row
        return out

    mine, theirs = units(group), units(target)
    kept = []
    for unit, rows in mine.items():
        ref = theirs.get(unit)
        if ref is None or not any(computed_by_other_code(r) for r in rows.values()):
            continue
        if set(ref) >= set(rows) and not any(computed_by_other_code(r) for r in ref.values()):
            log.warning(
                "%s: %s was computed by other code than this checkout's, the reference's rows by "
                "this code: kept the reference's",
                group,
                ", ".join(sorted(rows)),
            )
            kept += sorted(ref)
    return kept


def _replace_unit(staged: Path, target: Path, stem: str) -> None:
    """Put ``target``'s files of row ``stem`` (row, confusions, samples) into ``staged``."""
    for name in (f"{stem}.json", f"{stem}.cm.npz"):
        (staged / name).unlink(missing_ok=True)
        if (target / name).is_file():
            shutil.copy2(target / name, staged / name)
    samples = Path("samples", stem)
    shutil.rmtree(staged / samples, ignore_errors=True)
    if (target / samples).is_dir():
        shutil.copytree(target / samples, staged / samples)
