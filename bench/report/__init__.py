"""Reports built from a store's result rows alone: tables, a Markdown summary and figures.

A *store* is a folder holding ``rows/<profile>/<config>/`` (:mod:`bench.rows`). A report reads
every row of it and writes, inside it::

    results.parquet, results.csv     one line per row (per seed), flat      (tables)
    README.md                        one section per (dataset, split,       (markdown)
                                     profile, config), seeds summarised
    figures/<profile>_<config>_*     mIoU vs speed, per-class IoU,          (figures)
                                     confusion per method, examples,
                                     learning curves
    figures/cost_<dataset>_<split>   mIoU against training time, all groups

With a reference store (a user's ``runs/results/`` against the committed ``results/``) the
README also compares the two (:mod:`bench.report.compare`). Files are rendered aside and moved
into place only once all of them are (:mod:`bench.report.publish`).

No method and no runner code is imported, so a report can be rebuilt on any machine that has
the rows.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from bench.datasets.root import REPO_ROOT
from bench.errors import SegbenchError
from bench.report import figures as _figures
from bench.report import publish as _publish
from bench.report.compare import Comparison, compare_stores
from bench.report.figures import normalise_confusion, pareto_front, spread_labels
from bench.report.markdown import render_markdown
from bench.report.tables import arrow_safe, flatten_row, group_rows, results_table
from bench.rows import load_rows, read_row

__all__ = [
    "RESULTS_DIR", "flatten_row", "load_rows", "normalise_confusion", "pareto_front",
    "read_row", "results_table", "spread_labels", "write_report",
]  # fmt: skip

log = logging.getLogger(__name__)

#: The committed reference store.
RESULTS_DIR = REPO_ROOT / "results"


def _reference(reference_dir: Path) -> tuple[list, str]:
    """The reference's groups, or no groups and why they could not be read.

    A reference that cannot be read (a row of an older schema, say) must not stop the user's
    own report: the comparison is left out and the README says why.
    """
    try:
        rows = load_rows(reference_dir)
    except SegbenchError as exc:
        log.warning("reference %s not compared: %s", reference_dir, exc)
        return [], str(exc)
    return group_rows(rows, reference_dir), ""


def write_report(
    results_dir: Path = RESULTS_DIR, reference_dir: Path | None = None
) -> pd.DataFrame:
    """Rebuild every report file of the store ``results_dir`` from its ``rows/`` folder.

    Writes ``results.parquet``, ``results.csv``, ``README.md`` and ``figures/*.png`` (and
    ``figures/.report_manifest.json``, the list of figures it made), removes the figures it
    made earlier for groups that no longer have rows, and leaves every other file alone.
    Everything is rendered into a staging folder first and published only once all of it is
    (see :mod:`bench.report.publish`): a failure or a kill while rendering leaves the previous
    report exactly as it was.

    Parameters
    ----------
    results_dir : Path
        The store: the folder holding ``rows/`` (default: ``results/`` of the checkout).
    reference_dir : Path, optional
        Another store to compare with (the committed reference, for a user's store): each
        group present in both gets a comparison subsection and the preamble a summary line.

    Returns
    -------
    pandas.DataFrame
        The flat table written to ``results.parquet`` (one line per row, i.e. per seed).

    Raises
    ------
    SegbenchError
        If a row file of ``results_dir`` is not a valid row of this schema (the message names
        the file and how to refresh it). Nothing is written then.
    """
    store = Path(results_dir)
    rows = load_rows(store)  # raises before anything is written
    groups = group_rows(rows, store)
    comparison: Comparison | None = None
    if reference_dir is not None:
        ref_groups, error = _reference(Path(reference_dir))
        comparison = compare_stores(groups, ref_groups, Path(reference_dir))
        comparison.error = error
    table = results_table(rows)

    store.mkdir(parents=True, exist_ok=True)
    _publish.recover(store)
    staging = _publish.new_staging(store)
    try:
        staged_figures = staging / "figures"
        figures = {g.prefix: _figures.write_group_figures(g, staged_figures) for g in groups}
        cost = _figures.write_cost_figures(groups, staged_figures)
        written = [p.name for f in figures.values() for p in _figures.figure_paths(f)]
        written += [p.name for p in cost.values()]
        _publish.write_manifest(staged_figures, written)
        arrow_safe(table).to_parquet(staging / "results.parquet", index=False)
        table.to_csv(staging / "results.csv", index=False)
        text = render_markdown(groups, figures, comparison, store, cost)
        (staging / "README.md").write_text(text, encoding="utf-8")
        _publish.publish(staging, store)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "wrote %s: %d rows in %d groups, %d figures", store, len(rows), len(groups), len(written)
    )
    return table
