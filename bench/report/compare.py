"""A user's store against the reference: score differences, identical rows, time ratios.

Rows are matched on (dataset, split, profile, config, method, seed). A pair is *identical*
when every score, interval bound, per-class and per-sequence value and the confusion matrix
are equal (NaN equal to NaN): what a rerun of the same code on the same data must give. Time
ratios are user / reference, measured on whatever machines the two sides ran on (both CPUs are
shown).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.tables import Group, as_float
from bench.rows import run_key, run_label

log = logging.getLogger(__name__)

#: Row fields compared for "identical": every number the row reports about its predictions.
COMPARED = (
    "miou", "miou_ci_low", "miou_ci_high", "miou_mean_image", "global_acc", "mean_acc", "fwiou",
    "bf_score", "per_class_iou", "per_class_acc", "per_sequence", "confusion",
)  # fmt: skip


def same_value(a: Any, b: Any) -> bool:
    """Exact equality of JSON values, NaN equal to NaN, ints equal to the same floats."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


def _ratio(user: Any, reference: Any) -> float:
    u, r = as_float(user), as_float(reference)
    return u / r if math.isfinite(u) and math.isfinite(r) and r > 0 else math.nan


@dataclass(frozen=True)
class Pair:
    """One (method, seed) of a group, in both stores."""

    user: dict[str, Any]
    reference: dict[str, Any]

    @property
    def method(self) -> str:
        return str(self.user["method"])

    @property
    def seed(self) -> int:
        return int(self.user["seed"])

    @property
    def unit(self) -> str:
        """ "seed 0" or "fold 2, seed 0"."""
        return run_label(self.user)

    @property
    def both_ok(self) -> bool:
        return self.user["status"] == "ok" and self.reference["status"] == "ok"

    @property
    def diff(self) -> float:
        """User mIoU minus reference mIoU (fraction; NaN unless both are ok)."""
        if not self.both_ok:
            return math.nan
        return as_float(self.user["miou"]) - as_float(self.reference["miou"])

    @property
    def identical(self) -> bool:
        return self.both_ok and all(
            same_value(self.user.get(k), self.reference.get(k)) for k in COMPARED
        )

    @property
    def fit_ratio(self) -> float:
        return _ratio(self.user.get("fit_s"), self.reference.get("fit_s"))

    @property
    def ms_ratio(self) -> float:
        return _ratio(self.user.get("predict_ms_median"), self.reference.get("predict_ms_median"))

    @property
    def other_code(self) -> bool:
        """True when the reference row's ``provenance.code_hash`` is not the user row's."""
        u = (self.user.get("provenance") or {}).get("code_hash")
        r = (self.reference.get("provenance") or {}).get("code_hash")
        return u != r


@dataclass
class GroupComparison:
    """The rows of one group present in both stores, and those on one side only."""

    key: tuple[str, str, str, str]
    pairs: list[Pair] = field(default_factory=list)
    only_user: list[dict[str, Any]] = field(default_factory=list)
    only_reference: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Comparison:
    """A user's store compared with a reference store.

    Attributes
    ----------
    reference_dir : Path
    groups : dict
        ``{group key: GroupComparison}`` for every group present in both stores.
    groups_only_user, groups_only_reference : list of tuple
        Keys of the groups of one store only.
    error : str
        Why the reference could not be read ("" when it could); nothing is compared then.
    """

    reference_dir: Path
    groups: dict[tuple[str, str, str, str], GroupComparison] = field(default_factory=dict)
    groups_only_user: list[tuple[str, str, str, str]] = field(default_factory=list)
    groups_only_reference: list[tuple[str, str, str, str]] = field(default_factory=list)
    error: str = ""

    @property
    def pairs(self) -> list[Pair]:
        return [p for g in self.groups.values() for p in g.pairs]

    @property
    def n_identical(self) -> int:
        return sum(p.identical for p in self.pairs)

    @property
    def max_abs_diff(self) -> Pair | None:
        """The pair with the largest ``|diff|`` (None when no pair has both rows ok)."""
        scored = [p for p in self.pairs if p.both_ok]
        return max(scored, key=lambda p: abs(p.diff)) if scored else None


def compare_stores(user: list[Group], reference: list[Group], reference_dir: Path) -> Comparison:
    """Match the groups and rows of two stores (see the module docstring)."""
    ref_by_key = {g.key: g for g in reference}
    user_keys = {g.key for g in user}
    out = Comparison(Path(reference_dir))
    out.groups_only_reference = [g.key for g in reference if g.key not in user_keys]
    for group in user:
        ref = ref_by_key.get(group.key)
        if ref is None:
            out.groups_only_user.append(group.key)
            continue
        ref_rows = {(str(r["method"]), *run_key(r)): r for r in ref.rows}
        user_rows = {(str(r["method"]), *run_key(r)): r for r in group.rows}
        gc = GroupComparison(group.key)
        for key in sorted(user_rows):
            if key in ref_rows:
                gc.pairs.append(Pair(user_rows[key], ref_rows[key]))
            else:
                gc.only_user.append(user_rows[key])
        gc.only_reference = [ref_rows[k] for k in sorted(ref_rows) if k not in user_rows]
        out.groups[group.key] = gc
    return out


# -- Markdown ------------------------------------------------------------------------------------


def _label(key: tuple[str, str, str, str]) -> str:
    return f"`{key[2]}/{key[3]}` ({key[0]} {key[1]})"


def reference_link(comparison: Comparison, store: Path) -> str:
    """``[`<path>`](<path>/README.md)``: the reference as seen from the user's README."""
    rel = Path(os.path.relpath(comparison.reference_dir, store)).as_posix()
    return f"[`{rel}/`]({rel}/README.md)"


def summary_line(comparison: Comparison, store: Path) -> str:
    """The one line the README's preamble gives the comparison: identical rows, max |diff|."""
    head = f"**Against the reference** {reference_link(comparison, store)}: "
    if comparison.error:
        return f"{head}not compared ({comparison.error})."
    pairs = comparison.pairs
    if pairs:
        parts = [
            f"{len(pairs)} (config, method, seed) in both stores, "
            f"{comparison.n_identical} of them identical"
        ]
    else:
        parts = ["no (config, method, seed) in both stores"]
    worst = comparison.max_abs_diff
    if worst is not None:
        key = next(k for k, g in comparison.groups.items() if worst in g.pairs)
        parts.append(
            f"max |mIoU difference| {100 * abs(worst.diff):.2f} points "
            f"(`{worst.method}` {worst.unit}, {_label(key)})"
        )
    only_user = sum(len(g.only_user) for g in comparison.groups.values())
    only_ref = sum(len(g.only_reference) for g in comparison.groups.values())
    if only_user or only_ref:
        parts.append(
            f"in the groups of both, {only_user} rows only here and {only_ref} only in the "
            "reference"
        )
    other = sum(p.other_code for p in pairs)
    if other:
        parts.append(f"{other} of the reference rows computed by other code")
    if comparison.groups_only_user:
        parts.append(
            "not in the reference: " + ", ".join(_label(k) for k in comparison.groups_only_user)
        )
    return head + "; ".join(parts) + "."


def _pct(value: float) -> str:
    return f"{100 * value:.2f}" if math.isfinite(value) else "-"


def _times(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else "-"


def _cpu(row: dict[str, Any]) -> str:
    env = row.get("environment") or {}
    text = str(env.get("cpu") or "?")
    if env.get("cpu_count"):
        text += f" ({env['cpu_count']} cores)"
    if env.get("device") not in (None, "", "cpu"):
        text += f", {env['device']}"
    return text


def _note(pair: Pair) -> str:
    notes = []
    if pair.user["status"] != "ok":
        notes.append("failed here")
    if pair.reference["status"] != "ok":
        notes.append("failed in the reference")
    if pair.other_code:
        notes.append("reference computed by other code")
    # A fit that loaded finished weights is not comparable with one that trained them.
    for side, row in (("here", pair.user), ("in the reference", pair.reference)):
        if (row.get("checkpoint") or {}).get("reused"):
            notes.append(f"weights loaded {side}, not trained")
    return "; ".join(notes)


COMPARISON_HEADER = [
    "method", "seed", "mIoU % here", "mIoU % reference", "difference (points)", "identical",
    "fit s here / ref", "ms/image here / ref", "CPU here", "CPU reference", "note",
]  # fmt: skip
COMPARISON_ALIGN = "lrrrrlrrlll"


def comparison_body(gc: GroupComparison) -> list[list[str]]:
    """One table line per pair of ``gc`` (see :data:`COMPARISON_HEADER`)."""
    body = []
    for p in gc.pairs:
        diff = "0" if p.identical else (f"{100 * p.diff:+.2f}" if p.both_ok else "-")
        body.append(
            [
                p.method,
                str(p.seed) if p.user.get("fold") is None else f"{p.seed} (fold {p.user['fold']})",
                _pct(as_float(p.user.get("miou"))),
                _pct(as_float(p.reference.get("miou"))),
                diff,
                "identical" if p.identical else "no",
                _times(p.fit_ratio),
                _times(p.ms_ratio),
                _cpu(p.user),
                _cpu(p.reference),
                _note(p),
            ]
        )
    return body


def one_side_lines(gc: GroupComparison) -> list[str]:
    """The rows of ``gc`` that only one store has, as list items."""

    def names(rows: list[dict[str, Any]]) -> str:
        return ", ".join(f"`{r['method']}` {run_label(r)}" for r in rows)

    lines = []
    if gc.only_user:
        lines.append(f"- only here: {names(gc.only_user)}")
    if gc.only_reference:
        lines.append(f"- only in the reference: {names(gc.only_reference)}")
    return lines
