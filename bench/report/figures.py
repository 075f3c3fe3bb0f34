"""The report's figures: mIoU vs speed, per-class IoU, confusion per method, examples,
learning curves, and (across groups) test mIoU against training time.

Every figure of a group is named ``<profile>_<config>_<kind>.png`` (:data:`FIGURE_KINDS`, and
``confusion_<method>`` per method). A method with several seeds is one point, one heatmap line,
one confusion matrix and one example column: scores are its seed mean, per-row files (the
confusion matrix, the sample predictions) its lowest seed's.

Only the example figure needs more than the rows (the dataset, for the image and its ground
truth), and it does without when the data is not there.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import yaml
from matplotlib.figure import Figure

from bench.datasets import DATASETS, load_dataset
from bench.datasets.io import read_label
from bench.errors import SegbenchError
from bench.report.tables import (
    Group,
    MethodSummary,
    as_float,
    learning_curve,
    safe_name,
)
from bench.rows import stem_of

log = logging.getLogger(__name__)

FIGURE_DPI = 120
#: The figures of a group, besides one ``confusion_<method>`` per method.
FIGURE_KINDS = ("miou_vs_speed", "per_class_iou", "examples", "learning_curves")
#: What a report figure's name looks like (used only for stores whose figures/ predates the
#: report's manifest, see :mod:`bench.report.publish`).
REPORT_FIGURE = re.compile(
    r"^.+_(miou_vs_speed|per_class_iou|examples|learning_curves|confusion_.+)\.png$"
    r"|^cost_.+\.png$"
)


# -- pure helpers ---------------------------------------------------------------------------------


def pareto_front(ms: Any, miou: Any) -> np.ndarray:
    """Which methods no other method beats on both speed and accuracy.

    Parameters
    ----------
    ms : array-like of float
        Time per image (lower is better).
    miou : array-like of float
        mIoU (higher is better).

    Returns
    -------
    mask : ndarray of bool
        True where no other point is at least as fast and at least as good, and strictly better
        in one of the two. Points with a NaN are never on the front and dominate nothing.
    """
    ms = np.asarray(ms, dtype=np.float64)
    miou = np.asarray(miou, dtype=np.float64)
    valid = np.isfinite(ms) & np.isfinite(miou)
    front = valid.copy()
    for i in np.flatnonzero(valid):
        others = valid.copy()
        others[i] = False
        no_worse = (ms <= ms[i]) & (miou >= miou[i])
        better = (ms < ms[i]) | (miou > miou[i])
        if np.any(others & no_worse & better):
            front[i] = False
    return front


def normalise_confusion(cm: Any) -> np.ndarray:
    """Row-normalise a confusion matrix (ground truth on rows).

    Returns
    -------
    ndarray of float64
        Each row sums to 1 (the share of that class's pixels given each prediction); a class
        with no ground-truth pixel keeps a row of zeros rather than NaN.
    """
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def spread_labels(points: np.ndarray, widths: np.ndarray, height: float) -> np.ndarray:
    """Vertical shifts that keep point labels from overlapping (greedy, lowest point first).

    Each label is a box of ``widths[i]`` x ``height`` starting at its point (same units as
    ``points``, e.g. typographic points). A label that would overlap one already placed moves
    to the nearest free slot above or below, in steps of ``height``. A dozen labels need
    nothing cleverer, so this is written here rather than adding a dependency for it.

    Parameters
    ----------
    points : ndarray, shape (N, 2)
    widths : ndarray, shape (N,)
    height : float

    Returns
    -------
    shifts : ndarray, shape (N,)
        How far to move each label up (negative: down); 0 for labels that fit where they are.
    """
    points = np.asarray(points, dtype=float)
    shifts = np.zeros(len(points))
    placed: list[tuple[float, float, float]] = []  # (x, y, width) of placed labels

    def free(x: float, y: float, width: float) -> bool:
        return not any(
            x < px + pw and px < x + width and abs(y - py) < height for px, py, pw in placed
        )

    for i in np.argsort(points[:, 1], kind="stable"):
        x, y = points[i]
        for step in range(len(points) + 1):  # 0, +h, -h, +2h, -2h, ...: one of them is free
            candidates = [y + step * height, y - step * height] if step else [y]
            top = next((c for c in candidates if free(x, c, widths[i])), None)
            if top is not None:
                break
        placed.append((x, top, float(widths[i])))
        shifts[i] = top - y
    return shifts


# -- drawing -------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    # A bare Figure renders with the Agg canvas and leaves pyplot's global state (and the
    # backend of whoever imported us, e.g. a notebook) alone.
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(width, height), layout="constrained")
        fig.add_subplot()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    log.debug("wrote %s", path)
    return path


def _title(group: Group) -> str:
    return f"{group.dataset} {group.split} - {group.profile}/{group.config}"


def plot_miou_vs_speed(group: Group, path: Path) -> Path | None:
    """Seed-mean mIoU against ms per image (log x), one point per method, Pareto front marked.

    The bar is the lowest seed's test-set 95 % interval, moved onto the seed mean; with several
    seeds, each seed's own mIoU is a small dot at the same x (the training spread).
    """
    methods = [m for m in group.methods if m.mean("predict_ms_median") > 0]
    if not methods:
        return None
    ms = np.array([m.mean("predict_ms_median") for m in methods])
    miou = np.array([100 * m.mean("miou") for m in methods])
    shift = miou - np.array([100 * as_float(m.first["miou"]) for m in methods])
    low = np.array([100 * as_float(m.first.get("miou_ci_low")) for m in methods]) + shift
    high = np.array([100 * as_float(m.first.get("miou_ci_high")) for m in methods]) + shift
    # A missing CI draws no bar rather than a NaN one.
    yerr = np.nan_to_num(np.clip([miou - low, high - miou], 0, None), nan=0.0)
    front = pareto_front(ms, miou)

    fig = _new_figure(7.5, 4.8)
    ax = fig.axes[0]
    ax.errorbar(
        ms, miou, yerr=yerr, fmt="o", color="C0", ecolor="0.6", capsize=3,
        label="method, seed mean (bar: 95 % test-set CI of the lowest seed)",
    )  # fmt: skip
    multi = [(x, m) for x, m in zip(ms, methods, strict=True) if len(m.rows) > 1]
    if multi:
        xs = np.concatenate([np.full(len(m.rows), x) for x, m in multi])
        ys = np.concatenate([100 * m.values("miou") for _, m in multi])
        ax.plot(xs, ys, ".", color="C2", markersize=4, label="single seeds")
    order = np.argsort(ms[front])
    ax.plot(
        ms[front][order], miou[front][order], "-o", color="C3", markerfacecolor="none",
        markersize=11, label="Pareto front (nothing faster and better)",
    )  # fmt: skip
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.14)  # room for the labels of the outermost points
    # Label positions are fixed once the axes' limits are: move labels that would overlap.
    fontsize = 8
    names = [m.method for m in methods]
    points_pt = ax.transData.transform(np.column_stack([ms, miou])) * 72.0 / fig.dpi
    widths_pt = np.array([0.6 * fontsize * len(n) for n in names])  # average glyph width
    shifts = spread_labels(points_pt, widths_pt, height=1.2 * fontsize)
    for x, y, name, dy in zip(ms, miou, names, shifts, strict=True):
        ax.annotate(
            name, (x, y), xytext=(6, 4 + dy), textcoords="offset points", fontsize=fontsize,
            arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.5} if dy else None,
        )  # fmt: skip
    ax.set_xlabel("ms per image (median, mean over seeds, log scale)")
    ax.set_ylabel("mIoU %")
    ax.set_title(_title(group))
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def plot_per_class_iou(group: Group, path: Path) -> Path | None:
    """Heatmap of per-class IoU (%, mean over seeds), methods (rows) by classes (columns)."""
    methods = group.methods
    if not methods:
        return None
    names = group.class_names
    data = pd.DataFrame(
        [[100 * v for v in m.per_class_mean()] for m in methods],
        index=[m.method for m in methods],
        columns=names,
    )
    fig = _new_figure(max(6.0, 0.8 * len(names) + 3.0), max(2.8, 0.5 * len(methods) + 2.0))
    ax = fig.axes[0]
    sns.heatmap(
        data, ax=ax, annot=True, fmt=".1f", vmin=0, vmax=100, cmap="viridis",
        cbar_kws={"label": "IoU %"}, annot_kws={"fontsize": 8},
    )  # fmt: skip
    ax.set_xlabel("class")
    ax.set_ylabel("method")
    ax.set_title(f"Per-class IoU % (mean over seeds) - {_title(group)}")
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return _save(fig, path)


def plot_learning_curves(group: Group, path: Path) -> Path | None:
    """Training loss and validation mIoU against training minutes, per method and seed.

    One colour per method; every seed is a line. Methods that record no epochs are left out;
    no figure when none records any.
    """
    curves = [(m, [learning_curve(r) for r in m.rows]) for m in group.methods]
    curves = [(m, [c for c in cs if c]) for m, cs in curves if any(cs)]
    if not curves:
        return None
    has_val = any("val_miou" in e for _, cs in curves for c in cs for e in c)
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(11.0 if has_val else 6.0, 4.2), layout="constrained")
        axes = list(fig.subplots(1, 2 if has_val else 1, squeeze=False)[0])
    palette = sns.color_palette("tab20", len(curves)) if len(curves) > 10 else None
    for i, (m, cs) in enumerate(curves):
        colour = palette[i] if palette else f"C{i}"
        for j, c in enumerate(cs):
            minutes = [e["elapsed"] / 60 for e in c]
            label = m.method if j == 0 else None
            axes[0].plot(minutes, [e["loss"] for e in c], color=colour, lw=1, label=label)
            if has_val:
                val = [100 * e.get("val_miou", float("nan")) for e in c]
                axes[1].plot(minutes, val, color=colour, lw=1, marker=".", ms=3, label=label)
    axes[0].set_xlabel("training minutes")
    axes[0].set_ylabel("training loss (epoch mean)")
    axes[0].set_yscale("log")
    if has_val:
        axes[1].set_xlabel("training minutes")
        axes[1].set_ylabel("mIoU % on the config's val_split, per epoch")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"Learning curves (every seed a line) - {_title(group)}", fontsize=10)
    return _save(fig, path)


def cost_figure_name(dataset: str, split: str) -> str:
    """File name of the mIoU-against-training-time figure of one dataset and split."""
    return f"cost_{safe_name(dataset)}_{safe_name(split)}.png"


def plot_miou_vs_train_time(groups: list[Group], path: Path) -> Path | None:
    """Test mIoU against training seconds (log x) of every method of ``groups``.

    What an hour of this machine buys with each method: one point per (config, method), the
    seed mean of both axes, each group's marker its own. Classical methods' fit time counts as
    training. Groups must share dataset and split.
    """
    points = []
    for g in groups:
        for m in g.methods:
            t, miou = m.train_seconds(), 100 * m.mean("miou")
            if t > 0 and np.isfinite(miou):
                points.append((g, m, t, miou))
    if not points:
        return None
    fig = _new_figure(9.0, 6.5)
    ax = fig.axes[0]
    markers = "osD^vP*Xh<>"
    for i, g in enumerate(groups):
        mine = [(t, y) for gg, _, t, y in points if gg is g]
        if mine:
            xs, ys = zip(*mine, strict=True)
            ax.plot(xs, ys, markers[i % len(markers)], color=f"C{i % 10}", ms=6,
                    label=f"{g.profile}/{g.config}")  # fmt: skip
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.3)  # room for labels moved apart above crowded points
    fontsize = 7
    xy = np.array([(t, y) for _, _, t, y in points])
    names = [m.method for _, m, _, _ in points]
    points_pt = ax.transData.transform(xy) * 72.0 / fig.dpi
    widths_pt = np.array([0.6 * fontsize * len(n) for n in names])
    shifts = spread_labels(points_pt, widths_pt, height=1.2 * fontsize)
    for (x, y), name, dy in zip(xy, names, shifts, strict=True):
        ax.annotate(
            name, (x, y), xytext=(5, 3 + dy), textcoords="offset points", fontsize=fontsize,
            arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.5} if dy else None,
        )  # fmt: skip
    ax.set_xlabel("training seconds (fit; mean over seeds; log scale; each row's own machine)")
    ax.set_ylabel("mIoU % (mean over seeds)")
    g0 = groups[0]
    ax.set_title(f"{g0.dataset} {g0.split}: mIoU against training time, every method")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def write_cost_figures(groups: list[Group], figures_dir: Path) -> dict[tuple[str, str], Path]:
    """One :func:`plot_miou_vs_train_time` per (dataset, split) of ``groups``."""
    by_key: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_key.setdefault((g.dataset, g.split), []).append(g)
    out = {}
    for (dataset, split), members in by_key.items():
        path = plot_miou_vs_train_time(members, figures_dir / cost_figure_name(dataset, split))
        if path is not None:
            out[(dataset, split)] = path
    return out


def plot_confusion(method: MethodSummary, group: Group, path: Path) -> Path:
    """Row-normalised confusion matrix of one method (its lowest seed), annotated."""
    row = method.first
    names = list(row["class_names"])
    norm = pd.DataFrame(normalise_confusion(np.asarray(row["confusion"])), names, names)
    size = 0.6 * len(names) + 3.0
    fig = _new_figure(size + 1.0, size)
    ax = fig.axes[0]
    sns.heatmap(
        norm, ax=ax, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", square=True,
        cbar_kws={"label": "share of the class's pixels"},
        annot_kws={"fontsize": 7 if len(names) > 6 else 9},
    )  # fmt: skip
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{method.method} (seed {row['seed']}) - {_title(group)}", fontsize=10)
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    return _save(fig, path)


def sample_dir(group: Group, method: MethodSummary) -> Path:
    """``samples/<id>.seed<k>/`` of the method's lowest seed."""
    return group.folder / "samples" / stem_of(method.first)


def plot_examples(group: Group, path: Path) -> Path | None:
    """Grid of sample images: image, ground truth, then each method's prediction.

    Predictions are the lowest seed's. Image and ground truth come from the dataset named in
    the group's ``config.yaml``; when it cannot be loaded the grid shows the predictions only
    (and a warning is logged).
    """
    methods = group.methods
    dirs = {m.method: sample_dir(group, m) for m in methods}
    names = sorted({p.stem for d in dirs.values() if d.is_dir() for p in d.glob("*.png")})
    if not names:
        return None
    dataset = _load_dataset(group)
    palette = _palette(group)
    columns = (["image", "ground truth"] if dataset is not None else []) + list(dirs)

    with sns.axes_style("white"):
        fig = Figure(figsize=(2.2 * len(columns), 1.8 * len(names) + 0.4), layout="constrained")
        axes = fig.subplots(len(names), len(columns), squeeze=False)
    for i, name in enumerate(names):
        panels = _reference_panels(dataset, name, palette) if dataset is not None else []
        panels += [_prediction_panel(d / f"{name}.png", palette) for d in dirs.values()]
        for j, (ax, panel) in enumerate(zip(axes[i], panels, strict=True)):
            _show(ax, panel)
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(f"Examples - {_title(group)}", fontsize=10)
    return _save(fig, path)


def _show(ax: Any, panel: np.ndarray | str) -> None:
    """Draw an image, or a short note where there is none (missing file, unknown name)."""
    if isinstance(panel, str):
        ax.text(0.5, 0.5, panel, ha="center", va="center", fontsize=8, transform=ax.transAxes)
    else:
        ax.imshow(panel, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _reference_panels(dataset: Any, name: str, palette: np.ndarray) -> list[np.ndarray | str]:
    if name not in dataset.names:
        return ["not in dataset", "not in dataset"]
    index = dataset.names.index(name)
    try:
        return [dataset.native_image(index), _colorize(dataset.native_label(index), palette)]
    except (SegbenchError, OSError, ValueError) as exc:
        log.warning("examples: cannot read %s (%s)", name, exc)
        return ["unreadable", "unreadable"]


def _prediction_panel(path: Path, palette: np.ndarray) -> np.ndarray | str:
    if not path.is_file():
        return "no sample"
    try:
        return _colorize(read_label(path), palette)
    except SegbenchError as exc:
        log.warning("examples: %s", exc)
        return "unreadable"


def _read_config(group: Group) -> dict[str, Any] | None:
    path = group.folder / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        log.warning("%s: cannot read the config (%s)", path, exc)
        return None
    return config if isinstance(config, dict) else None


def _load_dataset(group: Group) -> Any | None:
    """The evaluated split as the runner built it, or None (logged) when it cannot be loaded."""
    config = _read_config(group)
    if config is None:
        return None
    name = config.get("dataset", group.dataset)
    # The keys every dataset takes, as bench.datasets.load_splits passes them for the scored split.
    options = {
        **(config.get("dataset_options") or {}),
        "root": config.get("data_root"),
        "subset": config.get("eval_subset"),
    }
    try:
        return load_dataset(name, config.get("split", group.split), **options)
    except Exception as exc:  # noqa: BLE001 - a missing data root must not stop the report
        log.warning(
            "examples of %s/%s: dataset %r not loaded (%s); showing predictions only",
            group.profile, group.config, name, exc,
        )  # fmt: skip
        return None


def _palette(group: Group) -> np.ndarray:
    """The dataset's palette (a class attribute, so no data is needed), else a generic one."""
    cls = DATASETS.get(group.dataset)
    if cls is not None and len(cls.palette):
        return np.asarray(cls.palette, dtype=np.uint8)
    colours = sns.color_palette("tab20", max(1, len(group.class_names)))
    return (np.asarray(colours) * 255).round().astype(np.uint8)


def _colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Paint a label map; values past the palette (void) are black. Same as Dataset.colorize."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette[:256]
    return lut[label]


# -- a group's figures --------------------------------------------------------------------------


def figure_name(group: Group, kind: str) -> str:
    """File name of figure ``kind`` of ``group`` (``confusion_<method>`` for a method's)."""
    return f"{group.prefix}{kind}.png"


def write_group_figures(group: Group, figures_dir: Path) -> dict[str, Any]:
    """Write every figure of a group into ``figures_dir``.

    Returns
    -------
    dict
        ``{kind: path}`` for the figures written, and ``"confusion": {method: path}``.
    """
    out: dict[str, Any] = {}
    for kind, plot in (
        ("miou_vs_speed", plot_miou_vs_speed),
        ("per_class_iou", plot_per_class_iou),
        ("learning_curves", plot_learning_curves),
    ):
        path = plot(group, figures_dir / figure_name(group, kind))
        if path is not None:
            out[kind] = path
    out["confusion"] = {
        m.method: plot_confusion(
            m, group, figures_dir / figure_name(group, f"confusion_{safe_name(m.method)}")
        )
        for m in group.methods
    }
    try:
        path = plot_examples(group, figures_dir / figure_name(group, "examples"))
    except Exception:  # noqa: BLE001 - the examples are a convenience; the tables must still come
        log.exception("examples of %s/%s failed; figure skipped", group.profile, group.config)
        path = None
    if path is not None:
        out["examples"] = path
    return out


def figure_paths(figures: dict[str, Any]) -> list[Path]:
    """Every path in a :func:`write_group_figures` result."""
    paths = [p for k, p in figures.items() if k != "confusion"]
    return paths + list(figures.get("confusion", {}).values())
