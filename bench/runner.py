"""Run a configuration: fit each method for each seed, predict the split, score it, one row each.

Each row is written the moment its method finishes, so a crash or a kill in method k loses
nothing of methods 1..k-1, and a rerun skips every (method, seed) whose stored row has the same
fingerprint (``force=True`` redoes them). The fingerprint covers the config's settings, the
method's full ``get_params()`` (defaults included), the seed, a hash of the project code the
method and the scoring run (:mod:`bench.provenance`), the lock file and the data's identity, so
changed code, defaults or data never reuse an old row. A method that raises is stored as a
failed row with its error, and the run goes on; bad input (a :class:`~bench.errors.
SegbenchError`) stops it with one message.

Rows go to a *store* (see :mod:`bench.rows` for the layout): by default the user's own,
``runs/results/``; the committed reference ``results/`` only when asked (``--reference``).
Predictions go to ``runs/pred/<profile>/<config>/<id>.seed<k>/`` (git-ignored).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import random
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from bench.config import Config, MethodSpec
from bench.datasets import SegmentationDataset, load_splits
from bench.datasets.base import evenly_spaced, resize_image
from bench.datasets.io import write_label
from bench.datasets.root import REPO_ROOT
from bench.errors import SegbenchError
from bench.methods import build_method, method_class, method_module, param_names
from bench.metrics import (
    ConfusionMatrix,
    boundary_f1,
    mean_image_miou,
    scores_by_group,
)
from bench.provenance import lock_hash, method_code_hash, provenance
from bench.rows import (
    SCHEMA_VERSION,
    row_stem,
    run_label,
    write_confusions,
    write_row,
    write_text,
)
from bench.system import current_rss_mb, environment, peak_rss_mb, reset_peak_rss

log = logging.getLogger(__name__)

#: The committed reference store (what the README cites).
REFERENCE_DIR = REPO_ROOT / "results"
#: The user's own store: what `make bench` writes on their machine (git-ignored).
LOCAL_DIR = REPO_ROOT / "runs" / "results"
RUNS_DIR = REPO_ROOT / "runs"
#: Kept for callers of the first version: the default store.
RESULTS_DIR = LOCAL_DIR


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if loaded) torch, so that a rerun gives the same row.

    Methods get the seed as their ``random_state`` too; this covers libraries that draw from
    the global generators.
    """
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


def rows_dir(cfg: Config, results_dir: Path = LOCAL_DIR) -> Path:
    """The folder of a config's rows in a store: ``<store>/rows/<profile>/<name>``."""
    return Path(results_dir) / "rows" / cfg.profile / cfg.name


#: Parameters that say where a method keeps files, not what it computes: the runner fills
#: them from its own folders (a method never knows the repository layout), and they are left
#: out of fingerprints and rows (a row must not depend on where the clone lives).
LOCATION_PARAMS = ("checkpoint_dir",)


def seeded_params(name: str, params: dict, seed: int, runs_dir: Path | None = None) -> dict:
    """``params`` with the seed as ``random_state`` when the method takes one.

    With ``runs_dir``, a method that takes a ``checkpoint_dir`` and has none set gets
    ``runs_dir/checkpoints``: checkpoints of the runner's fits live beside its predictions.
    """
    names = param_names(method_class(name))
    out = dict(params)
    if "random_state" in names:
        out["random_state"] = seed
    if runs_dir is not None and "checkpoint_dir" in names and out.get("checkpoint_dir") is None:
        out["checkpoint_dir"] = str(runs_dir / "checkpoints")
    return out


def _plain_params(method: Any) -> dict:
    """``get_params(deep=False)`` without nested estimators or :data:`LOCATION_PARAMS`."""
    return {
        k: v
        for k, v in method.get_params(deep=False).items()
        if not hasattr(v, "get_params") and k != "estimator" and k not in LOCATION_PARAMS
    }


def data_identity(*datasets: SegmentationDataset | None) -> str:
    """Hash of what the splits are: names, classes, resolution and the dataset's manifest.

    A row computed on other images (a changed split list, a re-converted dataset whose
    ``SHA256SUMS`` differ) is then recomputed rather than reused.
    """
    digest = hashlib.sha256()
    for ds in datasets:
        if ds is None:
            digest.update(b"none\0")
            continue
        digest.update(f"{type(ds).__name__}:{ds.split}:{ds.resolution}:".encode())
        digest.update(("\n".join(ds.names) + "\0" + ",".join(ds.class_names)).encode())
        root = getattr(ds, "root", None)
        manifest = Path(root) / "SHA256SUMS" if root is not None else None
        if manifest is not None and manifest.is_file():
            digest.update(manifest.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(
    cfg: Config,
    spec: MethodSpec,
    seed: int,
    data_id: str,
    method: Any,
    stage: Any | None,
    fold: int | None = None,
) -> str:
    """Hash of everything that decides the rows of ``spec`` with ``seed`` (see module doc)."""
    key = {
        "config": cfg.identity(),
        "fold": fold,
        "method": spec.name,
        "params": _plain_params(method),
        "crf": None if stage is None else _plain_params(stage),
        "seed": seed,
        "code": method_code_hash(method_module(spec.name)),
        "crf_code": None if stage is None else method_code_hash(method_module("dense_crf")),
        "lock": lock_hash(),
        "data": data_id,
        "schema": SCHEMA_VERSION,
    }
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextmanager
def group_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on a group of rows; a second run of it is refused, not raced."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise SegbenchError(
                f"{folder}: another segbench run is writing these rows; wait for it to end"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_group(out_dir: Path, cfg: Config) -> None:
    """Refuse to mix rows of two different configs that share a name in one store."""
    stored = out_dir / "config.yaml"
    if not stored.is_file():
        return
    try:
        from bench.config import parse_config

        old = parse_config(yaml.safe_load(stored.read_text()), source=str(stored))
    except (SegbenchError, yaml.YAMLError, AttributeError, TypeError):
        raise SegbenchError(
            f"{stored}: not a readable config; move the folder {out_dir} away to rerun"
        ) from None
    if old.identity() != cfg.identity():
        diff = sorted(k for k, v in cfg.identity().items() if old.identity()[k] != v)
        raise SegbenchError(
            f"{cfg.source}: its rows would go to {out_dir}, whose rows were made by a config "
            f"with other settings ({', '.join(diff)}); give this config its own 'name:' "
            "or move that folder away"
        )


def run_config(
    cfg: Config,
    force: bool = False,
    only: list[str] | None = None,
    results_dir: Path = LOCAL_DIR,
    runs_dir: Path = RUNS_DIR,
) -> list[dict]:
    """Run every method of ``cfg`` (or those in ``only``) for every seed; return their rows.

    Parameters
    ----------
    cfg : Config
    force : bool
        Redo (method, seed) pairs whose row already exists with the same fingerprint.
    only : list of str, optional
        Method ids to run; the others are left as they are.
    results_dir : Path
        The store the rows go to (default: the user's ``runs/results``).
    runs_dir : Path
        Where predictions go (tests point both at a temporary folder).
    """
    results_dir, runs_dir = Path(results_dir), Path(runs_dir)
    out_dir = rows_dir(cfg, results_dir)
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
    _check_writable(out_dir)
    _check_group(out_dir, cfg)

    # every fold's split lists are read (and checked) before the first fit
    folds = cfg.folds or [None]
    splits = {fold: load_splits(cfg, fold) for fold in folds}
    rows = []
    with group_lock(out_dir):
        write_text(out_dir / "config.yaml", cfg.to_yaml())
        for fold in folds:
            train, val, test = splits[fold]
            data_id = data_identity(train, val, test)
            log.info(
                "config %s (profile %s, seeds %s%s): train %s, eval %s -> %s",
                cfg.name, cfg.profile, cfg.seeds, "" if fold is None else f", fold {fold}",
                train, test, out_dir,
            )  # fmt: skip
            for spec in specs:
                for seed in cfg.seeds:
                    rows += _run_or_reuse(
                        cfg, spec, seed, data_id, splits[fold], out_dir, runs_dir, force, fold
                    )
    return rows


def _check_writable(out_dir: Path) -> None:
    """Fail before any work when the store cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{id(out_dir)}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SegbenchError(f"{out_dir}: cannot write result rows there ({exc})") from exc


def _run_or_reuse(
    cfg: Config,
    spec: MethodSpec,
    seed: int,
    data_id: str,
    splits: tuple,
    out_dir: Path,
    runs_dir: Path,
    force: bool,
    fold: int | None = None,
) -> list[dict]:
    method = build_method(spec.name, seeded_params(spec.name, spec.params, seed, runs_dir))
    stage = None
    if spec.crf is not None:
        stage = build_method("dense_crf", seeded_params("dense_crf", spec.crf, seed))
    fp = fingerprint(cfg, spec, seed, data_id, method, stage, fold)
    ids = [spec.id] + ([spec.crf_id] if spec.crf is not None else [])
    paths = [out_dir / f"{row_stem(i, seed, fold)}.json" for i in ids]
    unit = run_label({"seed": seed, "fold": fold})
    if not force and all(_done(p, fp) for p in paths):
        log.info("%s %s: done before (same fingerprint), skipped; --force redoes it",
                 spec.id, unit)  # fmt: skip
        return [json.loads(p.read_text()) for p in paths]
    rows = []
    train, val, test = splits
    for row in run_method(cfg, spec, seed, train, val, test, out_dir, runs_dir, method, fold):
        row["fingerprint"] = fp
        write_row(out_dir / f"{row_stem(row['method'], seed, fold)}.json", row)
        log.info("%s %s: %s", row["method"], unit, _summary(row))
        rows.append(row)
    return rows


def _done(row_path: Path, fp: str) -> bool:
    if not row_path.is_file():
        return False
    try:
        old = json.loads(row_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        # Unreadable: it holds nothing to keep, so the new row replaces it (atomically).
        log.warning("%s: unreadable stored row (%s), recomputing it", row_path, exc)
        return False
    if not isinstance(old, dict):
        log.warning("%s: not a row (a JSON %s), recomputing it", row_path, type(old).__name__)
    return (
        isinstance(old, dict)
        and old.get("fingerprint") == fp
        and old.get("status") == "ok"
        and old.get("schema_version") == SCHEMA_VERSION
    )


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
    seed: int,
    train: SegmentationDataset,
    val: SegmentationDataset | None,
    test: SegmentationDataset,
    out_dir: Path,
    runs_dir: Path,
    method: Any | None = None,
    fold: int | None = None,
) -> list[dict]:
    """Fit, predict, score and time one method with one seed; its row, and its CRF row if asked.

    With ``spec.crf``, the fitted method is handed to the ``dense_crf`` stage (as its
    ``estimator``, ``prefit=True``), whose own fit may tune the CRF on the validation split;
    that row's ``fit_s`` is the method's fit plus the stage's.
    """
    seed_everything(seed)
    if method is None:
        method = build_method(spec.name, seeded_params(spec.name, spec.params, seed, runs_dir))
    pred_root = runs_dir / "pred" / cfg.profile / cfg.name
    row = _new_row(cfg, spec.id, spec.name, spec.params, method, train, test, seed, fold)
    if not _fit_and_score(row, method, cfg, seed, train, val, test, out_dir, pred_root):
        return [row]
    rows = [row]
    if spec.crf is not None:
        seed_everything(seed)
        params = {**seeded_params("dense_crf", spec.crf, seed), "estimator": method,
                  "prefit": True}  # fmt: skip
        stage = build_method("dense_crf", params)
        crf_row = _new_row(cfg, spec.crf_id, "dense_crf", spec.crf, stage, train, test, seed, fold)
        crf_row["crf_of"] = spec.id
        for key in ("precision", "pretrained", "checkpoint"):
            if key in row:
                crf_row[key] = row[key]
        ok = _fit_and_score(crf_row, stage, cfg, seed, train, val, test, out_dir, pred_root)
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
    seed: int,
    fold: int | None = None,
) -> dict[str, Any]:
    module = method_module(name)
    return {
        "schema_version": SCHEMA_VERSION,
        "method": row_id,
        "method_name": name,
        "params": params,
        "all_params": _plain_params(method),
        "config": cfg.name,
        "profile": cfg.profile,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "resolution": "native" if cfg.resolution is None else "x".join(map(str, cfg.resolution)),
        "n_train": len(train),
        "n_images": len(test),
        "seed": seed,
        "fold": fold,
        "class_names": list(test.class_names),
        "provenance": provenance(module),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


#: Facts a method's ``fit_summary()`` may state that become columns of the row itself.
_SUMMARY_COLUMNS = ("precision", "pretrained", "checkpoint")


def _fit_and_score(
    row: dict,
    method: Any,
    cfg: Config,
    seed: int,
    train: SegmentationDataset,
    val: SegmentationDataset | None,
    test: SegmentationDataset,
    out_dir: Path,
    pred_root: Path,
) -> bool:
    """Fill ``row`` in place (status ok or failed); True when the method worked."""
    row_id = row["method"]
    stem = row_stem(row_id, seed, row.get("fold"))
    run_dir = pred_root / stem
    try:
        reset_peak_rss()
        # The process's peak includes what earlier methods left allocated; the resident size
        # at the start lets a reader take the method's own share (peak_mb - rss_start_mb).
        row["rss_start_mb"] = current_rss_mb()
        log.info("%s %s: fitting on %d %s images", row_id, run_label(row), len(train), train.split)
        t0 = time.perf_counter()
        method.fit(train, val_dataset=val)
        row["fit_s"] = time.perf_counter() - t0
        row["peak_mb_fit"] = peak_rss_mb()
        if hasattr(method, "fit_summary"):
            summary = method.fit_summary()
            row["fit_summary"] = summary
            for key in _SUMMARY_COLUMNS:
                if key in summary:
                    row[key] = summary[key]
        cm, times, bf = _predict_split(cfg, row_id, stem, method, test, out_dir, run_dir)
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
    per_image = np.stack(cm.per_image)
    groups = list(test.groups)
    # Intervals resample blocks of consecutive frames within each sequence: neighbouring
    # frames of one drive are not independent samples (bench.metrics.BLOCK_LENGTH says why);
    # a dataset of independent images has block length 1.
    low, high, block = dataset_miou_ci(cm, test, n_boot=cfg.bootstrap, seed=seed)
    write_confusions(out_dir / f"{stem}.cm.npz", per_image, test.names, groups)
    row.update(
        status="ok",
        error="",
        miou=s["miou"],
        miou_ci_low=low,
        miou_ci_high=high,
        ci={
            "method": "moving-block bootstrap within sequences",
            "block_length": block,
            "n_boot": cfg.bootstrap,
            "level": 0.95,
            "covers": "test-set sampling (which frames), not training variance (seeds)",
        },
        miou_mean_image=mean_image_miou(per_image),
        per_sequence=scores_by_group(per_image, groups),
        global_acc=s["global_acc"],
        mean_acc=s["mean_acc"],
        fwiou=s["fwiou"],
        bf_score=float(np.nanmean(bf)) if np.isfinite(bf).any() else float("nan"),
        per_class_iou=s["per_class_iou"],
        per_class_acc=s["per_class_acc"],
        confusion=cm.total.tolist(),
        predict_ms_median=float(np.median(times)) if len(times) else float("nan"),
        predict_ms_p90=float(np.percentile(times, 90)) if len(times) else float("nan"),
        peak_mb=max(row["peak_mb_fit"], peak_rss_mb()),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        environment=environment(REPO_ROOT),
    )
    return True


def scored_pair(test: SegmentationDataset, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``i`` at the working resolution and its native label, with the training checks.

    The image and its label must have the same native size: the scoring path goes through the
    same check as training data, so a wrong-sized test file stops the run naming the file.
    """
    native = test.native_image(i)
    gt = test.native_label(i)
    if native.ndim != 3 or native.shape[2] != 3 or native.dtype != np.uint8:
        raise SegbenchError(
            f"{test._describe(i)}: image must be HxWx3 uint8, got {native.shape} {native.dtype}"
        )
    if native.shape[:2] != gt.shape:
        raise SegbenchError(
            f"{test._describe(i)}: label is {gt.shape[1]}x{gt.shape[0]} but its image is "
            f"{native.shape[1]}x{native.shape[0]}"
        )
    image = native
    if test.resolution is not None and native.shape[:2] != test.resolution:
        image = resize_image(native, test.resolution)
    return image, gt


def _predict_split(
    cfg: Config,
    row_id: str,
    stem: str,
    method: Any,
    test: SegmentationDataset,
    out_dir: Path,
    run_dir: Path,
) -> tuple[ConfusionMatrix, np.ndarray, np.ndarray]:
    """Predict every image of ``test``; returns the evaluator, ms per image and BF per image.

    Only ``predict_proba`` is timed: decoding, resizing and scoring are the harness's work. A
    first call on image 0 warms caches and lazy initialisation up and is not counted. Methods
    return NumPy arrays, so a GPU method has synchronised by the time the clock stops. Every
    image's probabilities are checked (shape, finite, summing to 1), not just the first's.
    """
    cm = ConfusionMatrix(test.n_classes, test.ignore_index)
    sample_ids = set(evenly_spaced(len(test), cfg.sample_images).tolist())
    pred_dir = run_dir
    times, bf = [], []
    if len(test):
        method.predict_proba(scored_pair(test, 0)[0])  # warm-up, not timed
    for i in tqdm(range(len(test)), desc=f"{row_id} predict", unit="img", leave=False):
        image, gt = scored_pair(test, i)
        t0 = time.perf_counter()
        proba = method.predict_proba(image)
        times.append((time.perf_counter() - t0) * 1000.0)
        check_proba(proba, image.shape[:2], test.n_classes, f"{row_id}, image {test.names[i]}")
        pred = np.argmax(upsample_proba(proba, gt.shape), axis=-1).astype(np.uint8)
        cm.update(pred, gt)
        bf.append(boundary_f1(pred, gt, test.n_classes, test.ignore_index))
        write_label(pred_dir / f"{test.names[i]}.png", pred)
        if i in sample_ids:
            write_label(out_dir / "samples" / stem / f"{test.names[i]}.png", pred)
    return cm, np.asarray(times), np.asarray(bf)


def dataset_miou_ci(
    cm: ConfusionMatrix, dataset: SegmentationDataset, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, int]:
    """The mIoU interval of the images ``cm`` saw, resampled as ``dataset`` says it must be.

    Blocks of ``dataset.block_length`` consecutive frames within each of its groups (video
    sequences); single images for a dataset of independent images. Returns (low, high, block).
    """
    block = int(getattr(dataset, "block_length", 1))
    groups = list(dataset.groups)
    low, high = cm.miou_ci(n_boot=n_boot, seed=seed, groups=groups, block_length=block)
    return low, high, block


def check_proba(proba: Any, size: tuple[int, int], n_classes: int, where: str) -> None:
    """Raise ValueError unless ``proba`` is a finite (H, W, C) map whose pixels sum to 1."""
    expected = (*size, n_classes)
    if not isinstance(proba, np.ndarray) or proba.shape != expected:
        shape = getattr(proba, "shape", type(proba).__name__)
        raise ValueError(f"{where}: predict_proba must return an array {expected}, got {shape}")
    if not np.isfinite(proba).all():
        raise ValueError(f"{where}: predict_proba returned NaN or inf")
    if not np.allclose(proba.sum(axis=-1), 1.0, atol=1e-3):
        raise ValueError(f"{where}: predict_proba rows must sum to 1")


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
    low, high, _ = dataset_miou_ci(cm, dataset)  # the same interval as the runner's rows
    return s, (low, high)
