"""Schema-2 rows written by hand, as the runner leaves them, for the report tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from bench.datasets.io import write_label
from bench.metrics import mean_image_miou, scores, scores_by_group
from bench.rows import (
    SCHEMA_VERSION,
    row_stem,
    validate_row,
    write_confusions,
    write_row,
)

CLASSES = ["ground", "stripes", "checks", "speckle"]
N_IMAGES = 6
#: Two "drives" of three frames each, like CamVid test's 0001TP and Seq05VD.
SEQUENCES = ["0001TP"] * 3 + ["Seq05VD"] * 3
NAMES = [f"synthetic_test_{i:04d}" for i in range(N_IMAGES)]
#: Block length of the rows' intervals: shorter than the sequences, so blocks do resample.
BLOCK = 2
N_BOOT = 200
#: The images that get a sample prediction (two, so the example figure is small).
SAMPLES = NAMES[:2]
ENV = {
    "python": "3.11.7",
    "platform": "Linux",
    "cpu": "Test CPU 9000",
    "cpu_count": 2,
    "git_commit": "abc1234",
    "scikit-learn": "1.9.1",
    "torch": "2.13.0+cpu",
    "torch_threads": 2,
    "device": "cpu",
}
PROVENANCE = {"git_commit": "abc1234", "dirty": False, "code_hash": "c0de", "lock_hash": "10c4"}
ERROR = "RuntimeError: ran out of patience"
SYNTHETIC_CONFIG = {
    "name": "smoke",
    "dataset": "synthetic",
    "data_root": None,
    "split": "test",
    "resolution": None,
    "dataset_options": {"n_images": N_IMAGES, "size": [32, 48]},
}


def per_image_cms(diagonal: int, seed: int, drop_last_class: bool = False) -> np.ndarray:
    """Six images' confusion matrices: noise plus ``diagonal`` correct pixels per class."""
    rng = np.random.default_rng(seed)
    cms = rng.integers(0, 20, size=(N_IMAGES, 4, 4)) + diagonal * np.eye(4, dtype=np.int64)
    if drop_last_class:  # a class that is neither in the ground truth nor predicted: IoU NaN
        cms[:, 3, :] = 0
        cms[:, :, 3] = 0
    return cms.astype(np.int64)


def make_row(
    method: str,
    cms: np.ndarray | None,
    *,
    profile: str = "quick",
    config: str = "smoke",
    seed: int = 0,
    **extra,
) -> dict:
    """A valid schema-2 row; ``cms`` None makes a failed row.

    The per-image matrices ride along under ``_per_image`` for :func:`write_rows`, which
    writes them to the ``.cm.npz`` beside the row and drops the key.
    """
    row = {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "method_name": method,
        "params": {"depth": 3},
        "all_params": {"depth": 3, "n_jobs": 1},
        "config": config,
        "profile": profile,
        "dataset": "synthetic",
        "split": "test",
        "resolution": "native",
        "n_train": 8,
        "n_images": N_IMAGES,
        "seed": seed,
        "class_names": CLASSES,
        "provenance": dict(PROVENANCE),
        "started": "2026-01-01T00:00:00+00:00",
        "status": "failed" if cms is None else "ok",
        "error": ERROR if cms is None else "",
        "environment": dict(ENV),
        "fingerprint": "0123456789abcdef",
    }
    if cms is not None:
        s = scores(cms.sum(axis=0))
        row.update(s)
        row.update(
            miou_ci_low=s["miou"] - 0.04,
            miou_ci_high=s["miou"] + 0.03,
            ci={
                "method": "moving-block bootstrap within sequences",
                "block_length": BLOCK,
                "n_boot": N_BOOT,
                "level": 0.95,
            },
            miou_mean_image=mean_image_miou(cms),
            per_sequence=scores_by_group(cms, SEQUENCES),
            confusion=cms.sum(axis=0).tolist(),
            bf_score=0.42,
            fit_s=1.5,
            predict_ms_median=12.0 if method == "alpha" else 3.0,
            predict_ms_p90=15.0 if method == "alpha" else 4.0,
            peak_mb=512.3,
            peak_mb_fit=400.0,
            finished="2026-01-01T00:01:00+00:00",
            _per_image=cms,
        )
    row.update(extra)
    validate_row(row)
    return row


def write_rows(
    store: Path,
    rows: list[dict],
    config: dict | None = SYNTHETIC_CONFIG,
    samples: bool = True,
) -> Path:
    """Write rows (all of one profile and config) into ``store`` as the runner does.

    Returns the group folder ``rows/<profile>/<config>``.
    """
    first = rows[0]
    folder = Path(store) / "rows" / first["profile"] / first["config"]
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(1)
    for row in rows:
        row = dict(row)
        cms = row.pop("_per_image", None)
        stem = row_stem(row["method"], row["seed"])
        write_row(folder / f"{stem}.json", row)
        if cms is None:
            continue
        write_confusions(folder / f"{stem}.cm.npz", cms, NAMES, SEQUENCES)
        if samples:
            for name in SAMPLES:
                label = rng.integers(0, 4, size=(32, 48)).astype(np.uint8)
                write_label(folder / "samples" / stem / f"{name}.png", label)
    return folder


def table_line(readme: str, method: str, start: int = 0) -> list[str]:
    """The cells of the first table line at or after ``start`` whose first cell is ``method``."""
    lines = readme[start:].splitlines()
    line = next(ln for ln in lines if ln.startswith((f"| {method} |", f"| {method} (")))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def stub_figures(monkeypatch) -> None:
    """Make every figure a few bytes: for tests about files, not about drawing (2-core CI)."""
    from bench.report import figures

    def fake(*args):
        path = args[-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG\r\n\x1a\n stub")
        return path

    for name in (
        "plot_miou_vs_speed", "plot_per_class_iou", "plot_confusion", "plot_examples",
        "plot_learning_curves", "plot_miou_vs_train_time",
    ):  # fmt: skip
        monkeypatch.setattr(figures, name, fake)
