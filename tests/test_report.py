"""Reports from result files: tables, README, figures, and the pure helpers behind them."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.datasets.io import write_label
from bench.errors import SegbenchError
from bench.metrics import scores
from bench.report import (
    normalise_confusion,
    pareto_front,
    spread_labels,
    write_report,
)

CLASSES = ["ground", "stripes", "checks", "speckle"]
SAMPLES = ["synthetic_test_0000", "synthetic_test_0002"]
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
ERROR = "RuntimeError: ran out of patience"


def per_image_cms(diagonal: int, seed: int, drop_last_class: bool = False) -> np.ndarray:
    """Four images' confusion matrices: noise plus ``diagonal`` correct pixels per class."""
    rng = np.random.default_rng(seed)
    cms = rng.integers(0, 20, size=(4, 4, 4)) + diagonal * np.eye(4, dtype=np.int64)
    if drop_last_class:  # a class that is neither in the ground truth nor predicted: IoU NaN
        cms[:, 3, :] = 0
        cms[:, :, 3] = 0
    return cms.astype(np.int64)


def make_row(method: str, profile: str, cms: np.ndarray | None, **extra) -> dict:
    row = {
        "method": method,
        "method_name": method,
        "params": {"depth": 3},
        "all_params": {"depth": 3, "n_jobs": 1},
        "config": "smoke",
        "profile": profile,
        "dataset": "synthetic",
        "split": "test",
        "resolution": "native",
        "n_train": 8,
        "n_images": 4,
        "seed": 0,
        "class_names": CLASSES,
        "started": "2026-01-01T00:00:00+00:00",
        "status": "failed" if cms is None else "ok",
        "error": ERROR if cms is None else "",
        "environment": ENV,
        "fingerprint": "0123456789abcdef",
        "schema_version": 2,
        "provenance": {
            "git_commit": "abc1234",
            "dirty": False,
            "code_hash": "c0de",
            "lock_hash": "10c4",
        },
    }
    if cms is not None:
        s = scores(cms.sum(axis=0))
        row.update(s)
        row.update(
            miou_ci_low=s["miou"] - 0.04,
            miou_ci_high=s["miou"] + 0.03,
            confusion=cms.sum(axis=0).tolist(),
            bf_score=0.42,
            fit_s=1.5,
            predict_ms_median=12.0 if method == "alpha" else 3.0,
            predict_ms_p90=15.0 if method == "alpha" else 4.0,
            peak_mb=512.3,
            peak_mb_fit=400.0,
            finished="2026-01-01T00:01:00+00:00",
            ci={"method": "moving-block bootstrap", "block_length": 10, "n_boot": 1000},
            miou_mean_image=s["miou"] - 0.01,
            per_sequence={
                "s": {
                    "miou": s["miou"],
                    "global_acc": s["global_acc"],
                    "mean_acc": s["mean_acc"],
                    "n_images": 4,
                }
            },
        )
    row.update(extra)
    return row


def write_group(root: Path, profile: str, rows: list[dict], config: dict | None) -> Path:
    """A ``rows/<profile>/smoke`` folder as the runner leaves it."""
    folder = root / "rows" / profile / "smoke"
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(1)
    for row in rows:
        stem = f"{row['method']}.seed{row['seed']}"
        (folder / f"{stem}.json").write_text(json.dumps(row, indent=1))
        if row["status"] != "ok":
            continue
        for name in SAMPLES:
            label = rng.integers(0, 4, size=(32, 48)).astype(np.uint8)
            write_label(folder / "samples" / stem / f"{name}.png", label)
    return folder


SYNTHETIC_CONFIG = {
    "name": "smoke",
    "dataset": "synthetic",
    "data_root": None,
    "split": "test",
    "resolution": None,
    "dataset_options": {"n_images": 4, "size": [32, 48]},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """Two profiles, one failed method, run once for all the tests that only read."""
    root = tmp_path_factory.mktemp("results")
    alpha_cms, beta_cms = per_image_cms(200, 0), per_image_cms(60, 1, drop_last_class=True)
    quick = [
        make_row("alpha", "quick", alpha_cms, bf_score=0.42),
        make_row("beta", "quick", beta_cms),
        make_row("broken", "quick", None),
    ]
    folder = write_group(root, "quick", quick, SYNTHETIC_CONFIG)
    names = np.array([f"synthetic_test_{i:04d}" for i in range(4)])
    np.savez_compressed(folder / "alpha.seed0.cm.npz", per_image=alpha_cms, names=names)
    np.savez_compressed(folder / "beta.seed0.cm.npz", per_image=beta_cms, names=names)
    # No config.yaml: the example figure must do without image and ground truth.
    write_group(root, "full", [make_row("alpha", "full", per_image_cms(150, 2))], None)
    stale = root / "figures" / "device_gone_examples.png"
    stale.parent.mkdir()
    stale.write_bytes(b"\x89PNG stale")

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("bench.report")
    logger.addHandler(handler)
    try:
        table = write_report(root)
    finally:
        logger.removeHandler(handler)
    return {"root": root, "table": table, "rows": quick, "logs": records, "stale": stale}


def table_line(readme: str, method: str) -> list[str]:
    """The cells of ``method``'s line in the first table that has it."""
    line = next(ln for ln in readme.splitlines() if ln.startswith(f"| {method} |"))
    return [c.strip() for c in line.strip("|").split("|")]


# -- tables --------------------------------------------------------------------------------------


def test_parquet_round_trips_with_flat_columns(report):
    root = report["root"]
    parquet = pd.read_parquet(root / "results.parquet")
    assert len(parquet) == 4
    columns = set(parquet.columns)
    assert {f"iou_{c}" for c in CLASSES} <= columns
    assert {f"acc_{c}" for c in CLASSES} <= columns
    assert {"env_cpu", "env_torch", "env_git_commit", "params", "miou", "error"} <= columns
    assert "bf_score" in columns  # an extra scalar key is kept
    assert not {"confusion", "class_names", "environment"} & columns
    assert json.loads(parquet["params"].iloc[0]) == {"depth": 3}
    assert (parquet["env_cpu"] == "Test CPU 9000").all()
    pd.testing.assert_frame_equal(
        parquet.reset_index(drop=True), report["table"], check_dtype=False
    )
    assert len(pd.read_csv(root / "results.csv")) == 4


def test_table_order_and_values(report):
    table = report["table"]
    # Profiles lightest first, then mIoU descending, the failed row last in its group.
    assert list(zip(table["profile"], table["method"], strict=True)) == [
        ("quick", "alpha"),
        ("quick", "beta"),
        ("quick", "broken"),
        ("full", "alpha"),
    ]
    alpha = report["rows"][0]
    first = table.iloc[0]
    assert first["miou"] == pytest.approx(alpha["miou"])
    assert first["iou_stripes"] == pytest.approx(alpha["per_class_iou"][1])
    assert first["bf_score"] == pytest.approx(0.42)
    assert math.isnan(table.iloc[1]["iou_speckle"])  # absent class stays NaN
    broken = table.iloc[2]
    assert broken["status"] == "failed" and broken["error"] == ERROR
    assert math.isnan(broken["miou"])


# -- README ------------------------------------------------------------------------------------


def test_readme_numbers_match_rows(report):
    readme = (report["root"] / "README.md").read_text()
    assert readme.splitlines()[0].startswith("> Generated by `segbench report`")
    assert "Do not edit by hand" in readme.splitlines()[0]
    alpha, beta = report["rows"][0], report["rows"][1]
    cells = table_line(readme, "alpha")
    lo, hi = 100 * alpha["miou_ci_low"], 100 * alpha["miou_ci_high"]
    assert cells[1] == "1"  # one seed: no "±"
    assert cells[2] == f"{100 * alpha['miou']:.2f}"
    assert cells[3] == f"[{lo:.2f}, {hi:.2f}]"
    assert cells[4] == f"{100 * alpha['miou_mean_image']:.2f}"
    assert cells[5] == f"s {100 * alpha['miou']:.1f}"
    assert cells[6] == f"{100 * alpha['global_acc']:.2f}"
    assert cells[7] == f"{100 * alpha['mean_acc']:.2f}"
    assert cells[8:] == ["42.00", "1.50", "12.0 (15.0)", "512", "-", "-", "cpu"]
    # Best first within the group.
    assert readme.index("| alpha |") < readme.index("| beta |")
    # Per-class IoU in %, NaN (class absent everywhere) shown as "-".
    iou = " | ".join(f"{100 * v:.1f}" for v in beta["per_class_iou"][:3])
    assert f"| beta | {iou} | - |" in readme.splitlines()


def test_readme_failed_environment_and_command(report):
    readme = (report["root"] / "README.md").read_text()
    assert f"- `broken`: {ERROR}" in readme
    assert "| broken |" not in readme  # listed below the table, not in it
    assert "paired" in readme and "not training variance" in readme
    assert "CPU Test CPU 9000" in readme and "`abc1234`" in readme and "torch 2.13.0+cpu" in readme
    assert readme.count("`segbench run configs/smoke.yaml`") == 2
    sections = re.findall(r"^## .*$", readme, flags=re.M)
    assert len(sections) == 2 and "`quick`" in sections[0] and "`full`" in sections[1]


def test_readme_links_existing_figures(report):
    root = report["root"]
    readme = (root / "README.md").read_text()
    links = re.findall(r"\]\((figures/[^)]+)\)", readme)
    assert "figures/quick_smoke_miou_vs_speed.png" in links
    assert all((root / link).is_file() for link in links)


# -- figures ---------------------------------------------------------------------------------


def test_figures_written_and_stale_removed(report):
    figures = report["root"] / "figures"
    expected = {
        f"{profile}_smoke_{kind}.png"
        for profile in ("quick", "full")
        for kind in ("miou_vs_speed", "per_class_iou", "confusion_alpha", "examples")
    } | {"quick_smoke_confusion_beta.png"}
    assert {p.name for p in figures.glob("*.png")} == expected  # none for the failed method
    for name in expected:
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not report["stale"].exists()


def test_examples_without_dataset_warns(report):
    warnings = [r.getMessage() for r in report["logs"] if r.levelno == logging.WARNING]
    assert any("config.yaml" in w and "full" in w for w in warnings)
    # Predictions only (1 column) is narrower than image, truth and two methods (4 columns).
    figures = report["root"] / "figures"
    quick = (figures / "quick_smoke_examples.png").stat().st_size
    full = (figures / "full_smoke_examples.png").stat().st_size
    assert full < quick


def test_removed_group_loses_its_figures_and_empty_report(tmp_path):
    write_group(tmp_path, "full", [make_row("alpha", "full", per_image_cms(150, 2))], None)
    for path in (tmp_path / "rows" / "full" / "smoke" / "samples").rglob("*.png"):
        path.unlink()  # no samples: no example figure, a faster test
    write_report(tmp_path)
    assert len(list((tmp_path / "figures").glob("full_smoke_*.png"))) == 3
    (tmp_path / "figures" / "notes.txt").write_text("mine")

    shutil.rmtree(tmp_path / "rows" / "full")  # the profile's rows are gone
    table = write_report(tmp_path)
    assert table.empty
    assert list((tmp_path / "figures").glob("*.png")) == []
    assert (tmp_path / "figures" / "notes.txt").exists()  # only report figures are removed
    assert "No runs yet" in (tmp_path / "README.md").read_text()
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 0


def test_missing_rows_folder_is_an_empty_report(tmp_path):
    write_report(tmp_path)
    assert "No runs yet" in (tmp_path / "README.md").read_text()


# -- invalid rows ------------------------------------------------------------------------------


def test_malformed_json_names_the_file(tmp_path):
    folder = tmp_path / "rows" / "quick" / "smoke"
    folder.mkdir(parents=True)
    (folder / "alpha.json").write_text(json.dumps(make_row("alpha", "quick", per_image_cms(9, 0))))
    (folder / "bad.json").write_text('{"method": "bad", ')
    with pytest.raises(SegbenchError, match=r"bad\.json: not valid JSON"):
        write_report(tmp_path)
    assert not (tmp_path / "README.md").exists()  # nothing written from a broken set


def test_row_missing_keys_names_the_file_and_key(tmp_path):
    row = make_row("alpha", "quick", per_image_cms(9, 0))
    del row["per_class_iou"]
    folder = tmp_path / "rows" / "quick" / "smoke"
    folder.mkdir(parents=True)
    (folder / "alpha.json").write_text(json.dumps(row))
    with pytest.raises(SegbenchError, match=r"alpha\.json: missing key\(s\) per_class_iou"):
        write_report(tmp_path)


# -- pure helpers --------------------------------------------------------------------------------


def test_pareto_front_hand_made():
    ms = [1.0, 2.0, 3.0, 4.0, 2.0, 0.5, 5.0, 2.0]
    miou = [0.1, 0.5, 0.4, 0.6, 0.5, float("nan"), 0.6, 0.3]
    # 0: fastest. 1 and 4: tie, neither beats the other. 2: beaten by 1 (faster and better).
    # 3: best. 5: NaN, never on the front. 6: as good as 3 but slower. 7: as fast as 1, worse.
    expected = [True, True, False, True, True, False, False, False]
    assert pareto_front(ms, miou).tolist() == expected
    assert pareto_front([], []).tolist() == []


def test_normalise_confusion_rows_sum_to_one():
    cm = np.array([[2, 2, 0], [0, 0, 0], [1, 0, 3]])
    norm = normalise_confusion(cm)
    np.testing.assert_allclose(norm.sum(axis=1), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(norm[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(norm[2], [0.25, 0.0, 0.75])
    assert np.isfinite(norm).all()


def test_spread_labels_separates_close_labels_and_leaves_lone_ones():
    points = np.array([[0.0, 0.0], [5.0, 2.0], [8.0, 1.0], [500.0, 1.0]])
    widths = np.array([50.0, 50.0, 50.0, 50.0])
    shifts = spread_labels(points, widths, height=10.0)
    assert shifts[0] == 0 and shifts[3] == 0  # lowest label and the far-away one stay
    tops = points[:3, 1] + shifts[:3]
    gaps = np.abs(tops[:, None] - tops[None, :])[np.triu_indices(3, 1)]
    assert (gaps >= 10.0 - 1e-9).all()  # the three clustered labels no longer overlap


def test_seeds_are_one_line_with_mean_and_sd(tmp_path):
    rows = [make_row("alpha", "quick", per_image_cms(200 + 40 * k, k), seed=k) for k in range(3)]
    write_group(tmp_path, "quick", rows, None)
    write_report(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    cells = table_line(readme, "alpha")
    mious = np.array([r["miou"] for r in rows])
    assert cells[1] == "3"
    assert cells[2] == f"{100 * mious.mean():.2f} ± {100 * mious.std(ddof=1):.2f}"
    lo, hi = 100 * rows[0]["miou_ci_low"], 100 * rows[0]["miou_ci_high"]
    assert cells[3] == f"[{lo:.2f}, {hi:.2f}]"  # the lowest seed's interval
    assert len(pd.read_csv(tmp_path / "results.csv")) == 3  # one line per seed


def test_a_users_report_compares_with_the_reference(tmp_path):
    cms = per_image_cms(200, 0)
    ref = make_row("alpha", "quick", cms, fit_s=2.0)
    same = make_row("beta", "quick", per_image_cms(60, 1))
    write_group(tmp_path / "ref", "quick", [ref, same], None)
    mine = make_row("alpha", "quick", per_image_cms(190, 0), fit_s=3.0)
    mine["provenance"] = {**mine["provenance"], "code_hash": "newer"}
    write_group(tmp_path / "mine", "quick", [mine, dict(same)], None)
    write_report(tmp_path / "mine", reference_dir=tmp_path / "ref")
    readme = (tmp_path / "mine" / "README.md").read_text()
    assert "Your run beside the reference" in readme
    assert "2 rows in both: 1 identical" in readme
    diff = 100 * (mine["miou"] - ref["miou"])
    line = next(x for x in readme.splitlines() if x.startswith("| smoke/alpha |"))
    assert f"{diff:+.2f} (reference computed by other code)" in line and "| 1.50 |" in line
    assert "| smoke/beta | 0 |" in readme and "identical" in readme


def test_report_keeps_the_study_figure(tmp_path):
    write_group(tmp_path, "quick", [make_row("alpha", "quick", per_image_cms(200, 0))], None)
    study = tmp_path / "figures" / "upsampling_quick_deep_cpu.png"
    study.parent.mkdir(parents=True)
    study.write_bytes(b"\x89PNG study")
    write_report(tmp_path)
    assert study.read_bytes() == b"\x89PNG study"


def test_an_old_schema_row_is_refused_and_nothing_written(tmp_path):
    row = make_row("alpha", "quick", per_image_cms(200, 0))
    row.pop("schema_version")
    write_group(tmp_path, "quick", [row], None)
    with pytest.raises(SegbenchError, match="row schema 1 is not this code's schema 2"):
        write_report(tmp_path)
    assert not (tmp_path / "README.md").exists() and not (tmp_path / "results.csv").exists()


def test_a_failing_figure_leaves_the_old_report(tmp_path, monkeypatch):
    import bench.report as report_module

    write_group(tmp_path, "quick", [make_row("alpha", "quick", per_image_cms(200, 0))], None)
    write_report(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "README.md", tmp_path / "results.csv")}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "plot_per_class_iou", boom)
    with pytest.raises(RuntimeError):
        write_report(tmp_path)
    assert {p: p.read_bytes() for p in before} == before
    assert not list(tmp_path.rglob("*.tmp"))
