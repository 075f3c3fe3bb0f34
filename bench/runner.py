"""Run a configuration: fit each method, predict the split, score it, write one row per method.

Each method's row is written the moment that method finishes, so a crash or a kill in method k
loses nothing of methods 1..k-1, and a rerun skips every method whose stored row has the same
fingerprint (``force=True`` redoes them). A method that raises is stored as a failed row with
its error, and the run goes on; bad input (a :class:`~bench.errors.SegbenchError`) stops it.

Layout (``<cfg>`` = ``<profile>/<config name>``)::

    results/rows/<cfg>/config.yaml          the configuration, as run
    results/rows/<cfg>/<id>.json            the row: scores, CI, timings, memory, environment
    results/rows/<cfg>/<id>.cm.npz          per-image confusion matrices (bootstrap, paired tests)
    results/rows/<cfg>/samples/<id>/*.png   predictions on a few fixed images (report figure)
    runs/<cfg>/<id>/pred/*.png              every prediction as a label PNG (git-ignored)
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.config import Config, MethodSpec
from bench.datasets import SegmentationDataset, load_splits
from bench.datasets.base import evenly_spaced
from bench.datasets.io import write_label
from bench.datasets.root import REPO_ROOT
from bench.errors import SegbenchError
from bench.methods import build_method
from bench.metrics import ConfusionMatrix, boundary_f1
from bench.system import current_rss_mb, environment, peak_rss_mb, reset_peak_rss

log = logging.getLogger(__name__)

RESULTS_DIR = REPO_ROOT / "results"
RUNS_DIR = REPO_ROOT / "runs"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if loaded) torch, so that a rerun gives the same row."""
    random.seed(seed)
    # Legacy global state on purpose: libraries a method uses may draw from it.
    np.random.seed(seed)  # noqa: NPY002
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def upsample_proba(proba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HxWxC probability map to ``size`` (H, W) (identity if equal)."""
    if proba.shape[:2] == tuple(size):
        return proba
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(proba, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def _write_json(path: Path, data: dict) -> None:
    """Write atomically: a kill mid-write leaves the old file or none, never half a row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default, allow_nan=True))
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def rows_dir(cfg: Config, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / "rows" / cfg.profile / cfg.name


def run_config(
    cfg: Config,
    force: bool = False,
    only: list[str] | None = None,
    results_dir: Path = RESULTS_DIR,
    runs_dir: Path = RUNS_DIR,
) -> list[dict]:
    """Run every method of ``cfg`` (or those in ``only``) and return their rows.

    Parameters
    ----------
    cfg : Config
    force : bool
        Redo methods whose row already exists with the same fingerprint.
    only : list of str, optional
        Method ids to run; the others are left as they are.
    results_dir, runs_dir : Path
        Where rows and predictions go (tests point them at a temporary folder).
    """
    out_dir = rows_dir(cfg, results_dir)
    run_dir = runs_dir / cfg.profile / cfg.name
    specs = cfg.methods
    if only:
        missing = sorted(set(only) - {m.id for m in specs})
        if missing:
            raise SegbenchError(f"{cfg.source}: no method with id {', '.join(missing)}")
        specs = [m for m in specs if m.id in only]
    # Check names and parameters of every method before the first fit: a typo in the last
    # method should not surface after an hour of work.
    for spec in specs:
        build_method(spec.name, spec.params)
        if spec.crf is not None:
            build_method("dense_crf", spec.crf)

    train, val, test = load_splits(cfg)
    log.info("config %s (profile %s): train %s, eval %s", cfg.name, cfg.profile, train, test)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(cfg.to_yaml())

    rows = []
    for spec in specs:
        fingerprint = cfg.fingerprint(spec)
        ids = [spec.id] + ([spec.crf_id] if spec.crf is not None else [])
        if not force and all(_done(out_dir / f"{i}.json", fingerprint) for i in ids):
            log.info("%s: done before (same fingerprint), skipped; --force redoes it", spec.id)
            rows += [json.loads((out_dir / f"{i}.json").read_text()) for i in ids]
            continue
        for row in run_method(cfg, spec, train, val, test, out_dir, run_dir):
            row["fingerprint"] = fingerprint
            _write_json(out_dir / f"{row['method']}.json", row)
            log.info("%s: %s", row["method"], _summary(row))
            rows.append(row)
    return rows


def _done(row_path: Path, fingerprint: str) -> bool:
    if not row_path.is_file():
        return False
    old = json.loads(row_path.read_text())
    return old.get("fingerprint") == fingerprint and old.get("status") == "ok"


def _summary(row: dict) -> str:
    if row["status"] != "ok":
        return f"FAILED ({row['error']})"
    return (
        f"mIoU {100 * row['miou']:.1f} % [{100 * row['miou_ci_low']:.1f}, "
        f"{100 * row['miou_ci_high']:.1f}], class acc {100 * row['mean_acc']:.1f} %, "
        f"fit {row['fit_s']:.1f} s, {row['predict_ms_median']:.0f} ms/image"
    )


def run_method(
    cfg: Config,
    spec: MethodSpec,
    train: SegmentationDataset,
    val: SegmentationDataset | None,
    test: SegmentationDataset,
    out_dir: Path,
    run_dir: Path,
) -> list[dict]:
    """Fit, predict, score and time one method; returns its row, and its CRF row if asked.

    With ``spec.crf``, the fitted method is handed to the ``dense_crf`` stage (as its
    ``estimator``, ``prefit=True``), whose own fit may tune the CRF on the validation split;
    that row's ``fit_s`` is the method's fit plus the stage's.
    """
    seed_everything(cfg.seed)
    method = build_method(spec.name, spec.params)
    row = _new_row(cfg, spec.id, spec.name, spec.params, method, train, test)
    if not _fit_and_score(row, method, cfg, train, val, test, out_dir, run_dir / spec.id):
        return [row]
    rows = [row]
    if spec.crf is not None:
        seed_everything(cfg.seed)
        stage = build_method("dense_crf", {**spec.crf, "estimator": method, "prefit": True})
        crf_row = _new_row(cfg, spec.crf_id, "dense_crf", spec.crf, stage, train, test)
        crf_row["crf_of"] = spec.id
        ok = _fit_and_score(crf_row, stage, cfg, train, val, test, out_dir, run_dir / spec.crf_id)
        if ok:
            crf_row["fit_s"] += row["fit_s"]
        rows.append(crf_row)
    return rows


def _new_row(
    cfg: Config,
    row_id: str,
    name: str,
    params: dict,
    method: Any,
    train: SegmentationDataset,
    test: SegmentationDataset,
) -> dict[str, Any]:
    return {
        "method": row_id,
        "method_name": name,
        "params": params,
        "all_params": method.get_params(deep=False),
        "config": cfg.name,
        "profile": cfg.profile,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "resolution": "native" if cfg.resolution is None else "x".join(map(str, cfg.resolution)),
        "n_train": len(train),
        "n_images": len(test),
        "seed": cfg.seed,
        "class_names": list(test.class_names),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _fit_and_score(
    row: dict,
    method: Any,
    cfg: Config,
    train: SegmentationDataset,
    val: SegmentationDataset | None,
    test: SegmentationDataset,
    out_dir: Path,
    run_dir: Path,
) -> bool:
    """Fill ``row`` in place (status ok or failed); True when the method worked."""
    row_id = row["method"]
    try:
        reset_peak_rss()
        # The process's peak includes what earlier methods left allocated; the resident size
        # at the start lets a reader take the method's own share (peak_mb - rss_start_mb).
        row["rss_start_mb"] = current_rss_mb()
        log.info("%s: fitting on %d %s images", row_id, len(train), train.split)
        t0 = time.perf_counter()
        method.fit(train, val_dataset=val)
        row["fit_s"] = time.perf_counter() - t0
        row["peak_mb_fit"] = peak_rss_mb()
        if hasattr(method, "fit_summary"):
            row["fit_summary"] = method.fit_summary()
        cm, times, bf = _predict_split(cfg, row_id, method, test, out_dir, run_dir)
    except SegbenchError:
        raise  # bad input: stop the run with its message; rows already written stay
    except Exception as exc:  # noqa: BLE001 - any failure of a method becomes a failed row
        log.error("%s failed: %s", row_id, exc)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        row["environment"] = environment(REPO_ROOT)
        return False

    s = cm.scores()
    low, high = cm.miou_ci(n_boot=cfg.bootstrap, seed=cfg.seed)
    per_image = np.stack(cm.per_image)
    np.savez_compressed(out_dir / f"{row_id}.cm.npz", per_image=per_image, names=test.names)
    row.update(
        status="ok",
        error="",
        miou=s["miou"],
        miou_ci_low=low,
        miou_ci_high=high,
        global_acc=s["global_acc"],
        mean_acc=s["mean_acc"],
        fwiou=s["fwiou"],
        bf_score=float(np.nanmean(bf)) if np.isfinite(bf).any() else float("nan"),
        per_class_iou=s["per_class_iou"],
        per_class_acc=s["per_class_acc"],
        confusion=cm.total.tolist(),
        predict_ms_median=float(np.median(times)),
        predict_ms_p90=float(np.percentile(times, 90)),
        peak_mb=max(row["peak_mb_fit"], peak_rss_mb()),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        environment=environment(REPO_ROOT),
    )
    return True


def _predict_split(
    cfg: Config,
    row_id: str,
    method: Any,
    test: SegmentationDataset,
    out_dir: Path,
    run_dir: Path,
) -> tuple[ConfusionMatrix, np.ndarray, np.ndarray]:
    """Predict every image of ``test``; returns the evaluator, ms per image and BF per image.

    Only ``predict_proba`` is timed: decoding, resizing and scoring are the harness's work. A
    first call on image 0 warms caches and lazy initialisation up and is not counted. Methods
    return NumPy arrays, so a GPU method has synchronised by the time the clock stops.
    """
    cm = ConfusionMatrix(test.n_classes, test.ignore_index)
    sample_ids = set(evenly_spaced(len(test), cfg.sample_images).tolist())
    pred_dir = run_dir / "pred"
    times, bf = [], []
    if len(test):
        _check_proba(method.predict_proba(test.image(0)), test, row_id)
    for i in tqdm(range(len(test)), desc=f"{row_id} predict", unit="img", leave=False):
        image = test.image(i)
        t0 = time.perf_counter()
        proba = method.predict_proba(image)
        times.append((time.perf_counter() - t0) * 1000.0)
        gt = test.native_label(i)
        pred = np.argmax(upsample_proba(proba, gt.shape), axis=-1).astype(np.uint8)
        cm.update(pred, gt)
        bf.append(boundary_f1(pred, gt, test.n_classes, test.ignore_index))
        write_label(pred_dir / f"{test.names[i]}.png", pred)
        if i in sample_ids:
            write_label(out_dir / "samples" / row_id / f"{test.names[i]}.png", pred)
    return cm, np.asarray(times), np.asarray(bf)


def _check_proba(proba: Any, test: SegmentationDataset, row_id: str) -> None:
    expected = (*test.image(0).shape[:2], test.n_classes)
    if not isinstance(proba, np.ndarray) or proba.shape != expected:
        shape = getattr(proba, "shape", type(proba).__name__)
        raise ValueError(f"{row_id}.predict_proba must return an array {expected}, got {shape}")
    sums = proba.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=1e-3) or not np.isfinite(proba).all():
        raise ValueError(f"{row_id}.predict_proba rows must be finite and sum to 1")


def evaluate_dir(
    pred_dir: Path, dataset: SegmentationDataset, progress: Callable | None = None
) -> tuple[dict, tuple[float, float]]:
    """Score a folder of label PNGs (``NAME.png`` per image of ``dataset``) with the evaluator.

    Raises
    ------
    SegbenchError
        If a prediction is missing, unreadable, of the wrong size or outside the class range.
    """
    from bench.datasets.io import read_label

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise SegbenchError(f"{pred_dir}: prediction folder not found")
    cm = ConfusionMatrix(dataset.n_classes, dataset.ignore_index)
    bf: list[float] = []
    iterator = range(len(dataset))
    for i in progress(iterator) if progress else iterator:
        path = pred_dir / f"{dataset.names[i]}.png"
        pred = read_label(path)
        gt = dataset.native_label(i)
        if pred.shape != gt.shape:
            raise SegbenchError(
                f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]}, its label is "
                f"{gt.shape[1]}x{gt.shape[0]}"
            )
        if pred.size and pred.max() >= dataset.n_classes:
            raise SegbenchError(
                f"{path}: prediction value {int(pred.max())} is outside 0..{dataset.n_classes - 1}"
            )
        cm.update(pred, gt)
        bf.append(boundary_f1(pred, gt, dataset.n_classes, dataset.ignore_index))
    s = cm.scores()
    s["bf_score"] = float(np.nanmean(bf)) if np.isfinite(bf).any() else float("nan")
    return s, cm.miou_ci()
