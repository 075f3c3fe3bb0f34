"""Rows as tables: the flat per-seed table (CSV/Parquet), groups, and the seed aggregation.

A *group* is what one README section shows: the rows of one (dataset, split, profile, config).
Inside a group, the rows of one method with different seeds are summarised by
:class:`MethodSummary` (mean and standard deviation over seeds); the flat table keeps one line
per row, that is per seed.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.config import PROFILES
from bench.rows import run_key

log = logging.getLogger(__name__)

#: Kept in the JSON rows only: a matrix and a list do not fit a flat table.
_DROPPED = {"confusion", "class_names"}
#: Mappings whose keys become columns ``<prefix><key>``.
_FLATTENED = {
    "environment": "env_",
    "provenance": "prov_",
    "ci": "ci_",
    "checkpoint": "checkpoint_",
}
#: The columns a reader looks for first, in this order; the rest follow.
LEAD_COLUMNS = [
    "dataset", "split", "profile", "config", "method", "method_name", "seed", "status", "miou",
    "miou_ci_low", "miou_ci_high", "miou_mean_image", "global_acc", "mean_acc", "fwiou",
    "bf_score", "fit_s", "predict_ms_median", "predict_ms_p90", "peak_mb", "peak_mb_fit",
    "resolution", "n_train", "n_images", "precision", "pretrained", "error",
]  # fmt: skip
_NUMERIC_PREFIXES = ("miou", "global", "mean", "fwiou", "bf", "fit", "predict", "peak", "n_")


def as_float(value: Any) -> float:
    """``float(value)``, NaN for None or anything that is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def safe_name(name: str) -> str:
    """A string usable in a file name (method ids and config names normally already are)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))


def profile_key(profile: str) -> str:
    """Sort key of a profile: lightest first (:data:`bench.config.PROFILES`), unknown last."""
    rank = PROFILES.index(profile) if profile in PROFILES else len(PROFILES)
    return f"{rank:02d}{profile}"


# -- the flat table ---------------------------------------------------------------------------


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    """One row as flat columns for the tabular files.

    ``per_class_iou`` / ``per_class_acc`` become ``iou_<class>`` / ``acc_<class>``;
    ``per_sequence`` becomes ``miou_<seq>``, ``global_acc_<seq>``, ``mean_acc_<seq>`` and
    ``n_images_<seq>``; ``environment``, ``provenance``, ``ci`` and ``checkpoint`` become
    ``env_<key>``, ``prov_<key>``, ``ci_<key>`` and ``checkpoint_<key>``; any other non-scalar
    value (``params``, ``fit_summary`` with its history) a JSON string. ``confusion`` and
    ``class_names`` are dropped. Unknown scalar keys are kept as they are, so a new score needs
    no change here.
    """
    names = row.get("class_names") or []
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key in _DROPPED:
            continue
        if key in ("per_class_iou", "per_class_acc") and isinstance(value, list):
            prefix = "iou_" if key == "per_class_iou" else "acc_"
            flat.update({f"{prefix}{name}": v for name, v in zip(names, value, strict=False)})
        elif key in _FLATTENED and isinstance(value, dict):
            flat.update({f"{_FLATTENED[key]}{k}": _scalar_or_json(v) for k, v in value.items()})
        elif key == "per_sequence" and isinstance(value, dict):
            for seq, sc in value.items():
                flat.update({f"{m}_{seq}": _scalar_or_json(v) for m, v in sc.items()})
        else:
            flat[key] = _scalar_or_json(value)
    return flat


def _scalar_or_json(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def results_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The flat table of all rows, one line per row (per seed).

    Sorted by dataset, split, profile (lightest first, :data:`bench.config.PROFILES`), config,
    then methods by their seed-mean mIoU (best first) with the seeds of one method next to each
    other, lowest seed first; failed rows last in their group.
    """
    table = pd.DataFrame([flatten_row(r) for r in rows])
    for column in LEAD_COLUMNS:
        if column not in table.columns:
            numeric = column.startswith(_NUMERIC_PREFIXES) or column == "seed"
            table[column] = np.nan if numeric else ""
    table = table[LEAD_COLUMNS + _ordered_rest(table.columns)]
    if table.empty:
        return table
    ok = table["status"] == "ok"
    group = ["dataset", "split", "profile", "config", "method"]
    # The seed-mean of each method's ok rows, so all seeds of a method sort together.
    method_mean = table["miou"].where(ok).groupby([table[c] for c in group]).transform("mean")
    order = table.assign(
        _failed=~ok,
        _mean=method_mean,
        _profile=table["profile"].map(profile_key),
        _fold=pd.to_numeric(table.get("fold", pd.Series(index=table.index)), errors="coerce"),
        _seed=pd.to_numeric(table["seed"], errors="coerce"),
    ).sort_values(
        ["dataset", "split", "_profile", "config", "_failed", "_mean", "method", "_fold", "_seed"],
        ascending=[True, True, True, True, True, False, True, True, True],
        na_position="last",
        kind="stable",
    )
    return table.loc[order.index].reset_index(drop=True)


def _ordered_rest(columns: Iterable[str]) -> list[str]:
    """Columns after the lead ones: per-class, per-sequence/extras, params, provenance/env."""
    rest = [c for c in columns if c not in LEAD_COLUMNS]

    def key(c: str) -> int:
        if c.startswith("iou_"):
            return 0
        if c.startswith("acc_"):
            return 1
        if c in ("params", "all_params", "fit_summary"):
            return 3
        if c.startswith(("prov_", "env_")):
            return 4
        return 2

    return sorted(rest, key=key)  # stable: keeps class order within iou_ / acc_


def arrow_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Make mixed-type object columns strings: Parquet needs one type per column.

    An extra key may be a number in one row and a string in another (rows from different
    versions of the runner); such a column is written as text rather than failing the report.
    """
    table = table.copy()
    for column in [c for c in table.columns if pd.api.types.is_object_dtype(table[c].dtype)]:
        values = table[column].dropna()
        if len({type(v) for v in values}) > 1:
            table[column] = table[column].map(lambda v: v if v is None else str(v))
    return table


# -- seeds --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodSummary:
    """The ok rows of one method in one group, lowest seed first.

    Scores are summarised over seeds (training variance); the per-row things that cannot be
    averaged (the test-set interval, samples, confusion files) are the lowest seed's.
    """

    method: str
    rows: tuple[dict[str, Any], ...]

    @property
    def first(self) -> dict[str, Any]:
        """The lowest (fold, seed) row: its interval, samples and confusion stand for the method."""
        return self.rows[0]

    @property
    def seeds(self) -> list[int]:
        """The distinct seeds of the rows, lowest first."""
        return sorted({int(r["seed"]) for r in self.rows})

    @property
    def folds(self) -> list[int]:
        """The distinct folds of the rows (empty for a config without folds)."""
        return sorted({int(r["fold"]) for r in self.rows if r.get("fold") is not None})

    @property
    def keys(self) -> list[tuple[int, int]]:
        """:func:`~bench.rows.run_key` of every row, in row order."""
        return [run_key(r) for r in self.rows]

    def values(self, key: str) -> np.ndarray:
        """``key`` of every seed's row, as floats (NaN where missing)."""
        return np.array([as_float(r.get(key)) for r in self.rows], dtype=np.float64)

    def mean(self, key: str) -> float:
        """Mean of ``key`` over the seeds that have it (NaN when none has)."""
        return _nanmean(self.values(key))

    def sd(self, key: str) -> float:
        """Sample standard deviation (n - 1) of ``key`` over seeds; NaN with fewer than two."""
        values = self.values(key)
        values = values[np.isfinite(values)]
        return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan

    def sequence_mean(self, sequence: str, key: str = "miou") -> float:
        """Mean over seeds of ``per_sequence[sequence][key]``."""
        values = [
            as_float(((r.get("per_sequence") or {}).get(sequence) or {}).get(key))
            for r in self.rows
        ]
        return _nanmean(np.array(values, dtype=np.float64))

    def per_class_mean(self, key: str = "per_class_iou") -> list[float]:
        """Per-class ``key`` averaged over seeds (a class NaN in every seed stays NaN)."""
        values = np.array([[as_float(v) for v in r[key]] for r in self.rows], dtype=np.float64)
        return [_nanmean(column) for column in values.T]

    def distinct(self, key: str) -> list[str]:
        """The distinct non-empty values of ``key`` over seeds, as text, in seed order."""
        out = [str(r.get(key)) for r in self.rows if r.get(key) not in (None, "")]
        return list(dict.fromkeys(out))

    def row(self, key: tuple[int, int]) -> dict[str, Any] | None:
        """The row of ``key`` = (fold, seed) (:func:`~bench.rows.run_key`)."""
        return next((r for r in self.rows if run_key(r) == key), None)

    def train_seconds(self) -> float:
        """Mean over seeds of :func:`train_seconds`."""
        return _nanmean(np.array([train_seconds(r) for r in self.rows], dtype=np.float64))


def train_seconds(row: dict[str, Any]) -> float:
    """What fitting the row's model cost, in seconds of this row's machine.

    A row whose fit loaded finished weights (``checkpoint.reused``) states what training them
    took; otherwise it is the row's ``fit_s`` (for a CRF stage: the base method's fit, which
    its row repeats, plus the CRF's tuning is not counted separately).
    """
    checkpoint = row.get("checkpoint") or {}
    if isinstance(checkpoint, dict) and checkpoint.get("reused"):
        return as_float(checkpoint.get("train_seconds"))
    return as_float(row.get("fit_s"))


def learning_curve(row: dict[str, Any]) -> list[dict[str, float]]:
    """The row's training history with cumulative wall-clock seconds (``elapsed``) added.

    Empty for a method that records no epochs.
    """
    history = (row.get("fit_summary") or {}).get("history") or []
    out, elapsed = [], 0.0
    for entry in history:
        if not isinstance(entry, dict) or "seconds" not in entry:
            return []
        elapsed += as_float(entry["seconds"])
        out.append({**{k: as_float(v) for k, v in entry.items()}, "elapsed": elapsed})
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def summarise_seeds(rows: Iterable[dict[str, Any]]) -> list[MethodSummary]:
    """One :class:`MethodSummary` per method of the ok rows, best seed-mean mIoU first."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            by_method.setdefault(str(row["method"]), []).append(row)
    summaries = [
        MethodSummary(method, tuple(sorted(items, key=run_key)))
        for method, items in by_method.items()
    ]
    summaries.sort(key=lambda s: (-s.mean("miou"), s.method))
    return summaries


# -- groups ------------------------------------------------------------------------------------


@dataclass
class Group:
    """The rows of one (dataset, split, profile, config) of a store.

    Attributes
    ----------
    folder : Path
        ``<store>/rows/<profile>/<config>``: the config, confusion files and samples.
    rows : list of dict
        Every row (all seeds, ok and failed).
    """

    dataset: str
    split: str
    profile: str
    config: str
    folder: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.dataset, self.split, self.profile, self.config)

    @cached_property
    def methods(self) -> list[MethodSummary]:
        """One summary per method that has an ok row, best seed-mean mIoU first."""
        return summarise_seeds(self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self.rows if r["status"] != "ok"),
            key=lambda r: (str(r["method"]), run_key(r)),
        )

    @property
    def prefix(self) -> str:
        """Start of the names of this group's figures: ``<profile>_<config>_``."""
        return f"{safe_name(self.profile)}_{safe_name(self.config)}_"

    @property
    def class_names(self) -> list[str]:
        return list(self.methods[0].first["class_names"]) if self.methods else []

    @cached_property
    def sequences(self) -> list[str]:
        """The test sequences of the ok rows, in order of appearance.

        Empty when every "sequence" is a single image (a dataset without video sequences
        may label each image as its own group: a column per image is no summary) or when there
        is only one (its column would repeat the split's mIoU).
        """
        counts: dict[str, float] = {}
        for summary in self.methods:
            for row in summary.rows:
                for seq, sc in (row.get("per_sequence") or {}).items():
                    n = as_float((sc or {}).get("n_images"))
                    counts[seq] = max(counts.get(seq, 0.0), n if math.isfinite(n) else 0.0)
        # one sequence (a dataset of independent images in one group) is the whole split
        return list(counts) if len(counts) > 1 and any(n > 1 for n in counts.values()) else []


def group_rows(rows: list[dict[str, Any]], store: Path) -> list[Group]:
    """Split rows into groups, ordered by dataset, split, profile (light first), config.

    Each row needs ``row_file`` (its path relative to ``store``, set by
    :func:`bench.rows.load_rows`), which locates the group's folder.
    """
    groups: dict[tuple[str, str, str, str], Group] = {}
    for row in rows:
        key = (str(row["dataset"]), str(row["split"]), str(row["profile"]), str(row["config"]))
        if key not in groups:
            groups[key] = Group(*key, folder=(Path(store) / row["row_file"]).parent)
        groups[key].rows.append(row)
    prefixes = [g.prefix for g in groups.values()]
    for prefix in sorted({p for p in prefixes if prefixes.count(p) > 1}):
        # The figure names carry profile and config only: a config that changed dataset or
        # split between runs would overwrite its own figures.
        log.warning("rows of several datasets/splits share figures %s*", prefix)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1], profile_key(k[2]), k[3]))]
