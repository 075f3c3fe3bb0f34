"""The one definition of a result row: its fields, file names, atomic writes, reading, checks.

The runner writes rows, the report and the studies read them, all through this module, so a
row means the same thing everywhere. A row is a JSON object in a *store* (a folder holding
``rows/``)::

    <store>/rows/<profile>/<config>/config.yaml              the configuration, as run
    <store>/rows/<profile>/<config>/<id>.seed<k>.json         the row of method <id>, seed k
    <store>/rows/<profile>/<config>/<id>.seed<k>.cm.npz       its per-image confusion matrices
    <store>/rows/<profile>/<config>/samples/<id>.seed<k>/     a few predictions (figures)

A config with ``folds`` (cross-validation) has ``<id>.fold<f>.seed<k>`` stems instead, and its
rows a ``fold`` field (absent or null otherwise).

Two stores exist: the committed *reference* (``results/``, what the README cites) and the
user's own (``runs/results/``, what ``make bench`` writes on their machine). A row of an older
schema is refused with a message that says how to refresh it, never half-read.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import SegbenchError

#: Version of the row layout below. Rows of another version are refused by :func:`read_row`.
SCHEMA_VERSION = 2

#: Keys every row has, whatever its status.
REQUIRED = (
    "schema_version", "method", "method_name", "config", "profile", "dataset", "split", "seed",
    "status", "fingerprint", "provenance",
)  # fmt: skip
#: Keys an ``ok`` row has on top (scores, intervals, timings).
REQUIRED_OK = (
    "miou", "miou_ci_low", "miou_ci_high", "ci", "miou_mean_image", "global_acc", "mean_acc",
    "fwiou", "bf_score", "class_names", "per_class_iou", "per_class_acc", "confusion",
    "per_sequence", "fit_s", "predict_ms_median", "predict_ms_p90",
)  # fmt: skip
#: Keys of ``provenance``: what code, lock file and commit computed the row.
PROVENANCE_KEYS = ("git_commit", "dirty", "code_hash", "lock_hash")


def row_stem(method_id: str, seed: int, fold: int | None = None) -> str:
    """File stem of the row of ``method_id`` with ``seed``: ``<id>.seed<k>``.

    A config with ``folds`` has one row per fold too: ``<id>.fold<f>.seed<k>``.
    """
    if fold is None:
        return f"{method_id}.seed{int(seed)}"
    return f"{method_id}.fold{int(fold)}.seed{int(seed)}"


def stem_of(row: dict[str, Any]) -> str:
    """:func:`row_stem` of a stored row."""
    return row_stem(row["method"], row["seed"], row.get("fold"))


def run_key(row: dict[str, Any]) -> tuple[int, int]:
    """``(fold, seed)`` of a row, fold -1 when the config has no folds: rows sort by it."""
    fold = row.get("fold")
    return (-1 if fold is None else int(fold), int(row["seed"]))


def run_label(row: dict[str, Any]) -> str:
    """``"seed 0"`` or ``"fold 2, seed 0"``: which trained model a row is, in words."""
    fold = row.get("fold")
    return f"seed {row['seed']}" if fold is None else f"fold {fold}, seed {row['seed']}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it over ``path``.

    The temporary name holds the process id and a random part, so two processes writing the
    same file never share one; a kill mid-write leaves the old file (or none), never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_row(path: Path, row: dict[str, Any]) -> None:
    """Write ``row`` as JSON, atomically (see :func:`atomic_write`)."""
    text = json.dumps(row, indent=1, default=_json_default, allow_nan=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_confusions(
    path: Path, per_image: np.ndarray, names: Iterable[str], groups: Iterable[str]
) -> None:
    """Write the per-image confusion matrices of a row (``.cm.npz``) atomically.

    Keys: ``per_image`` (N, C, C), ``names`` (N,) and ``groups`` (N,): the sequence of each
    image, so a paired block bootstrap can be run from the file alone.
    """
    names, groups = np.asarray(list(names)), np.asarray(list(groups))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, per_image=per_image, names=names, groups=groups)

    atomic_write(path, write)


def read_row(path: Path) -> dict[str, Any]:
    """Read and check one row file.

    Returns
    -------
    dict
        The row as stored (JSON ``NaN`` becomes ``float('nan')``).

    Raises
    ------
    SegbenchError
        If the file is not JSON or not an object, its schema is not this code's, a key is
        missing, or its per-class lists or confusion matrix do not match its class names. The
        message names the file and says what to do.
    """
    path = Path(path)
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SegbenchError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "delete it and rerun its config to recompute it"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SegbenchError(f"{path}: cannot read the row file ({exc})") from exc
    if not isinstance(row, dict):
        raise SegbenchError(f"{path}: a row must be a JSON object, got {type(row).__name__}")
    version = row.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise SegbenchError(
            f"{path}: row schema {version} is not this code's schema {SCHEMA_VERSION}; "
            "recompute it with `segbench run <its config> --force` (reference rows: "
            "`make reference`), or delete the row"
        )
    validate_row(row, path)
    return row


def validate_row(row: dict[str, Any], where: Path | str = "<row>") -> None:
    """Check the keys and shapes of a row (see :func:`read_row`); raises SegbenchError."""
    _check_keys(where, row, REQUIRED)
    if row["status"] not in ("ok", "failed"):
        raise SegbenchError(f"{where}: status must be 'ok' or 'failed', got {row['status']!r}")
    if not isinstance(row["seed"], int) or isinstance(row["seed"], bool):
        raise SegbenchError(f"{where}: seed must be an integer, got {row['seed']!r}")
    fold = row.get("fold")
    if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool)):
        raise SegbenchError(f"{where}: fold must be an integer or null, got {fold!r}")
    if not isinstance(row["provenance"], dict):
        raise SegbenchError(f"{where}: provenance must be a mapping")
    _check_keys(f"{where} (provenance)", row["provenance"], PROVENANCE_KEYS)
    if row["status"] != "ok":
        return
    _check_keys(where, row, REQUIRED_OK)
    n = len(row["class_names"])
    for key in ("per_class_iou", "per_class_acc"):
        if not isinstance(row[key], list) or len(row[key]) != n:
            raise SegbenchError(f"{where}: {key} must be a list of {n} values (one per class)")
    cm = np.asarray(row["confusion"])
    if cm.shape != (n, n):
        raise SegbenchError(f"{where}: confusion must be {n}x{n}, got shape {cm.shape}")
    for key in ("miou", "global_acc", "mean_acc"):
        value = row[key]
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise SegbenchError(f"{where}: {key} must be a finite number, got {value!r}")


def _check_keys(where: Path | str, row: dict, keys: Iterable[str]) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise SegbenchError(f"{where}: missing key(s) {', '.join(missing)}")


def row_paths(store: Path) -> list[Path]:
    """Every row file of a store (``<store>/rows/<profile>/<config>/*.json``), sorted."""
    return sorted(p for p in (Path(store) / "rows").glob("*/*/*.json") if not p.name[0] == ".")


def load_rows(store: Path) -> list[dict[str, Any]]:
    """Every row of a store, each with ``row_file`` (its path relative to the store).

    Raises
    ------
    SegbenchError
        For the first file that is not a valid row (see :func:`read_row`).
    """
    rows = []
    for path in row_paths(store):
        row = read_row(path)
        row["row_file"] = path.relative_to(store).as_posix()
        rows.append(row)
    return rows
