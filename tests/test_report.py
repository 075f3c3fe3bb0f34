"""Reports from a store's rows: flat tables, seeds summarised in the README, figures, helpers."""

from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
from report_rows import (
    BLOCK,
    CLASSES,
    ERROR,
    N_BOOT,
    SEQUENCES,
    make_row,
    per_image_cms,
    stub_figures,
    table_line,
    write_rows,
)

from bench import metrics
from bench.report import normalise_confusion, pareto_front, spread_labels, write_report
from bench.report.gap import Gap
from bench.report.markdown import MAIN_HEADER, gap_note
from bench.report.publish import MANIFEST
from bench.report.tables import (
    Group,
    MethodSummary,
    learning_curve,
    results_table,
    train_seconds,
)

ALPHA = [per_image_cms(200, 0), per_image_cms(190, 5)]
BETA = [per_image_cms(60, s, drop_last_class=True) for s in (1, 2, 3)]


def alpha_row(seed: int, cms: np.ndarray, **extra) -> dict:
    return make_row("alpha", cms, seed=seed, precision="bf16", pretrained="imagenet", **extra)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """Two profiles, seeds, one failed method; run once for all the tests that only read."""
    root = tmp_path_factory.mktemp("results")
    quick = [
        alpha_row(0, ALPHA[0], checkpoint={"reused": False, "train_seconds": 1.5}),
        alpha_row(1, ALPHA[1], checkpoint={"reused": True, "train_seconds": 40.0}),
        *(make_row("beta", cms, seed=s) for s, cms in zip((0, 1, 2), BETA, strict=True)),
        make_row("broken", None),
    ]
    quick[0]["fit_summary"] = {
        "history": [
            {"epoch": 0, "loss": 0.9, "val_miou": 0.2, "seconds": 10.0},
            {"epoch": 1, "loss": 0.5, "val_miou": 0.3, "seconds": 12.5},
        ]
    }
    write_rows(root, quick)
    # No config.yaml: the example figure must do without image and ground truth.
    write_rows(root, [make_row("alpha", per_image_cms(150, 2), profile="full")], config=None)
    stale = root / "figures" / "device_gone_examples.png"  # an older report's, no manifest
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
    readme = (root / "README.md").read_text()
    return {"root": root, "table": table, "rows": quick, "logs": records, "readme": readme}


def quick_section(readme: str) -> str:
    return readme[readme.index("profile `quick`") : readme.index("profile `full`")]


# -- flat tables: one line per seed ---------------------------------------------------------------


def test_parquet_round_trips_with_flat_columns(report):
    root = report["root"]
    parquet = pd.read_parquet(root / "results.parquet")
    assert len(parquet) == 7  # every seed is a line
    columns = set(parquet.columns)
    assert {f"iou_{c}" for c in CLASSES} <= columns
    assert {f"acc_{c}" for c in CLASSES} <= columns
    for seq in ("0001TP", "Seq05VD"):
        assert {f"miou_{seq}", f"global_acc_{seq}", f"mean_acc_{seq}", f"n_images_{seq}"} <= columns
    assert {"env_cpu", "prov_code_hash", "prov_dirty", "ci_block_length", "ci_method"} <= columns
    assert {"checkpoint_reused", "checkpoint_train_seconds", "precision", "pretrained"} <= columns
    assert {"seed", "miou_mean_image", "params", "fit_summary", "error"} <= columns
    assert not {"confusion", "class_names", "environment", "per_sequence", "ci"} & columns
    assert json.loads(parquet["params"].iloc[0]) == {"depth": 3}
    assert json.loads(parquet["fit_summary"].iloc[0])["history"][1]["val_miou"] == 0.3
    # Missing values: None in Parquet's object columns, NaN in the frame; the same otherwise.
    plain = lambda df: df.astype(object).where(df.notna(), None)  # noqa: E731
    pd.testing.assert_frame_equal(plain(parquet), plain(report["table"]), check_dtype=False)
    assert len(pd.read_csv(root / "results.csv")) == 7


def test_table_keeps_seeds_together_best_method_first(report):
    table = report["table"]
    assert list(zip(table["profile"], table["method"], table["seed"], strict=True)) == [
        ("quick", "alpha", 0),
        ("quick", "alpha", 1),
        ("quick", "beta", 0),
        ("quick", "beta", 1),
        ("quick", "beta", 2),
        ("quick", "broken", 0),
        ("full", "alpha", 0),
    ]
    alpha = report["rows"][0]
    first = table.iloc[0]
    assert first["miou"] == pytest.approx(alpha["miou"])
    assert first["miou_0001TP"] == pytest.approx(alpha["per_sequence"]["0001TP"]["miou"])
    assert first["iou_stripes"] == pytest.approx(alpha["per_class_iou"][1])
    assert math.isnan(table.iloc[2]["iou_speckle"])  # absent class stays NaN
    broken = table.iloc[5]
    assert broken["status"] == "failed" and broken["error"] == ERROR
    assert math.isnan(broken["miou"])


# -- README: one line per method, seeds summarised -----------------------------------------------


def test_main_table_header_has_sequence_columns(report):
    header = next(
        ln for ln in quick_section(report["readme"]).splitlines() if ln.startswith("| method |")
    )
    cells = [c.strip() for c in header.strip("|").split("|")]
    at = MAIN_HEADER.index("BF %") + 1
    assert cells == [*MAIN_HEADER[:at], "mIoU 0001TP %", "mIoU Seq05VD %", *MAIN_HEADER[at:]]
    assert "95 % CI (lowest seed)" in cells


def test_seeds_are_one_line_mean_and_sd(report):
    section = quick_section(report["readme"])
    rows = report["rows"]
    alpha, beta = rows[:2], rows[2:5]
    cells = table_line(section, "alpha")
    miou = [r["miou"] for r in alpha]
    assert cells[1] == "2"
    assert cells[2] == f"{100 * np.mean(miou):.2f} ± {100 * np.std(miou, ddof=1):.2f}"
    # The interval is the lowest seed's, not an average of intervals.
    assert (
        cells[3] == f"[{100 * alpha[0]['miou_ci_low']:.2f}, {100 * alpha[0]['miou_ci_high']:.2f}]"
    )
    mean = lambda key, rs: f"{100 * np.mean([r[key] for r in rs]):.2f}"  # noqa: E731
    assert cells[4] == mean("miou_mean_image", alpha)
    assert cells[5] == mean("mean_acc", alpha)
    assert cells[6] == mean("global_acc", alpha)
    assert cells[7] == "42.00"
    seq = [r["per_sequence"]["Seq05VD"]["miou"] for r in alpha]
    assert cells[9] == f"{100 * np.mean(seq):.2f}"
    # One seed loaded its weights: the cell says what training them took.
    assert cells[10] == "1.50 (loaded; trained 40.0)"
    assert cells[11:] == ["12.0 (15.0)", "512", "bf16", "imagenet", "cpu"]

    cells = table_line(section, "beta")
    assert cells[1] == "3"
    sd = np.std([r["miou"] for r in beta], ddof=1)
    assert cells[2] == f"{100 * np.mean([r['miou'] for r in beta]):.2f} ± {100 * sd:.2f}"
    assert cells[10:] == ["1.50", "3.00 (4.00)", "512", "-", "-", "cpu"]


def test_one_seed_has_no_plus_minus(report):
    readme = report["readme"]
    full = readme[readme.index("profile `full`") :]
    cells = table_line(full, "alpha")
    assert cells[1] == "1" and "±" not in cells[2]


def test_readme_preamble_failed_environment_and_command(report):
    readme = report["readme"]
    assert readme.splitlines()[0].startswith("> Generated by `segbench report`")
    assert "dataset-level" in readme and "mIoU/image averages each image's own mIoU" in readme
    assert "lowest seed's moving-block bootstrap" in readme
    assert f"- `broken` seed 0: {ERROR}" in readme
    assert "| broken |" not in readme  # listed below the table, not in it
    assert "CPU Test CPU 9000" in readme and "`abc1234`" in readme and "torch 2.13.0+cpu" in readme
    assert readme.count("`segbench run configs/smoke.yaml`") == 2
    sections = re.findall(r"^## .*profile.*$", readme, flags=re.M)
    assert len(sections) == 2 and "`quick`" in sections[0] and "`full`" in sections[1]
    assert re.findall(r"^## .*$", readme, flags=re.M)[0] == "## What training time buys"
    # Per-class IoU in %, mean over seeds; a class absent everywhere shown as "-".
    beta = report["rows"][2:5]
    per_class = np.nanmean([r["per_class_iou"][:3] for r in beta], axis=0)
    iou = " | ".join(f"{100 * v:.1f}" for v in per_class)
    assert f"| beta | {iou} | - |" in readme.splitlines()


def test_top_two_gap_is_the_paired_block_bootstrap_in_words(report):
    section = quick_section(report["readme"])
    low, high = metrics.paired_bootstrap_diff(
        ALPHA[0], BETA[0], n_boot=N_BOOT, seed=0, groups=SEQUENCES, block_length=BLOCK
    )
    diff = report["rows"][0]["miou"] - report["rows"][2]["miou"]
    note = next(ln for ln in section.splitlines() if ln.startswith("**Top two:**"))
    assert f"= {100 * diff:+.2f} points for the seed 0 models" in note
    assert f"[{100 * low:+.2f}, {100 * high:+.2f}]" in note
    assert f"blocks of {BLOCK} consecutive frames within each of the 2 test sequences" in note
    assert "test-set sampling only" in note and "not training variance" in note
    assert "excludes 0: on test frames like these, `alpha` scores above `beta`" in note
    assert "sd of mIoU over seeds" in note and "(`beta`, 3 seeds)" in note
    assert "resampled test sets" not in section  # the old verdict is gone


def _summary(method: str, mious: list[float]) -> MethodSummary:
    rows = [{"method": method, "seed": s, "miou": m} for s, m in enumerate(mious)]
    return MethodSummary(method, tuple(rows))


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.01, 0.03, "`a` scores above `b` for these trained models (seed 0)"),
        (-0.01, 0.03, "The interval contains 0"),
        (-0.03, -0.01, "`b` scores above `a` for these trained models (seed 0), although"),
    ],
)
def test_gap_note_verdicts(low, high, expected):
    gap = Gap(_summary("a", [0.5]), _summary("b", [0.48]), "seed 0", 0, 0.02, low, high, "r")
    note = gap_note(gap)
    assert expected in note
    assert "Training variance is not measured here" in note  # one seed each
    two = Gap(
        _summary("a", [0.5, 0.52]), _summary("b", [0.48, 0.47]), "seed 0", 0, 0.02, low, high, "r"
    )
    assert "the seed spread: sd of mIoU over seeds 1.41 points (`a`, 2 seeds)" in gap_note(two)


def test_gap_falls_back_without_block_bootstrap(tmp_path, monkeypatch):
    """bench.metrics without ``groups=``/``block_length=``: single images, said so."""
    stub_figures(monkeypatch)
    plain = metrics.paired_bootstrap_diff

    def old_signature(a, b, n_boot=1000, level=0.95, seed=0):
        return plain(a, b, n_boot=n_boot, level=level, seed=seed)

    monkeypatch.setattr(metrics, "paired_bootstrap_diff", old_signature)
    write_rows(tmp_path, [make_row("alpha", ALPHA[0]), make_row("beta", BETA[0])], samples=False)
    write_report(tmp_path)
    note = next(ln for ln in (tmp_path / "README.md").read_text().splitlines() if "Top two" in ln)
    low, high = plain(ALPHA[0], BETA[0], n_boot=N_BOOT, seed=0)
    assert f"[{100 * low:+.2f}, {100 * high:+.2f}] (bootstrap of single test images" in note


def test_an_unreadable_confusion_file_is_named_and_the_rest_reported(tmp_path, monkeypatch, caplog):
    stub_figures(monkeypatch)
    write_rows(tmp_path, [make_row("alpha", ALPHA[0]), make_row("beta", BETA[0])], samples=False)
    (broken,) = [p for p in tmp_path.rglob("alpha*.cm.npz")]
    broken.write_bytes(b"junk")
    with caplog.at_level(logging.WARNING):
        write_report(tmp_path)
    assert "alpha.seed0 or beta.seed0" in caplog.text or "beta.seed0 or alpha.seed0" in caplog.text
    assert "--force --only alpha" in caplog.text
    readme = (tmp_path / "README.md").read_text()
    assert "**Top two:**" not in readme and "| alpha |" in readme


def test_rows_of_other_code_are_flagged_in_their_section(tmp_path, monkeypatch):
    from bench.provenance import lock_hash, method_code_hash

    stub_figures(monkeypatch)
    current = {"git_commit": "now", "dirty": False, "lock_hash": lock_hash(),
               "code_hash": method_code_hash("baselines.class_prior")}  # fmt: skip
    rows = [
        make_row("alpha", ALPHA[0], method_name="class_prior", provenance=current),
        make_row(
            "beta",
            BETA[0],
            method_name="class_prior",
            provenance={**current, "code_hash": "0ld", "git_commit": "old1"},
        ),  # fmt: skip
    ]
    write_rows(tmp_path, rows, samples=False)
    write_report(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "**1 of these 2 rows were computed by other code than this version's**" in readme
    assert "commit(s) `old1`" in readme and "`segbench run configs/smoke.yaml`" in readme
    # all current: no warning
    write_rows(tmp_path, [rows[0]], samples=False)
    (tmp_path / "rows" / "quick" / "smoke" / "beta.seed0.json").unlink()
    write_report(tmp_path)
    assert "computed by other code" not in (tmp_path / "README.md").read_text()


# -- figures ---------------------------------------------------------------------------------


def test_figures_written_linked_and_listed(report):
    root = report["root"]
    figures = root / "figures"
    expected = {
        f"{profile}_smoke_{kind}.png"
        for profile in ("quick", "full")
        for kind in ("miou_vs_speed", "per_class_iou", "confusion_alpha", "examples")
    } | {
        "quick_smoke_confusion_beta.png",
        "quick_smoke_learning_curves.png",  # only alpha of quick records epochs
        "cost_synthetic_test.png",  # one per dataset and split, over every group
    }
    assert {p.name for p in figures.glob("*.png")} == expected  # none for the failed method
    for name in expected:
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(json.loads((figures / MANIFEST).read_text())["figures"]) == expected
    links = re.findall(r"\]\((figures/[^)]+)\)", report["readme"])
    assert "figures/quick_smoke_miou_vs_speed.png" in links
    assert "figures/cost_synthetic_test.png" in links
    assert "figures/quick_smoke_learning_curves.png" in links
    assert all((root / link).is_file() for link in links)
    # An older report's figure of a group that is gone (no manifest then: judged by its name).
    assert not (figures / "device_gone_examples.png").exists()
    assert not list(root.glob(".report-staging-*")) and not list(root.glob(".figures-old-*"))


def test_examples_without_dataset_warns(report):
    warnings = [r.getMessage() for r in report["logs"] if r.levelno == logging.WARNING]
    assert any("config.yaml" in w and "full" in w for w in warnings)
    # Predictions only (1 column) is narrower than image, truth and two methods (4 columns).
    figures = report["root"] / "figures"
    quick = (figures / "quick_smoke_examples.png").stat().st_size
    full = (figures / "full_smoke_examples.png").stat().st_size
    assert full < quick


def test_examples_use_the_lowest_seeds_samples(tmp_path, monkeypatch):
    from bench.report import figures

    seen = {}
    monkeypatch.setattr(figures, "plot_miou_vs_speed", lambda group, path: None)
    monkeypatch.setattr(figures, "plot_per_class_iou", lambda group, path: None)
    monkeypatch.setattr(figures, "plot_confusion", lambda m, group, path: path)
    monkeypatch.setattr(
        figures, "plot_examples", lambda group, path: seen.update(
            {m.method: figures.sample_dir(group, m) for m in group.methods}
        )
    )  # fmt: skip
    write_rows(tmp_path, [make_row("alpha", ALPHA[1], seed=3), make_row("alpha", ALPHA[0], seed=7)])
    write_report(tmp_path)
    assert seen["alpha"].name == "alpha.seed3" and seen["alpha"].is_dir()


# -- groups ------------------------------------------------------------------------------------


def test_images_as_their_own_groups_give_no_sequence_columns():
    row = make_row("alpha", ALPHA[0])
    row["per_sequence"] = metrics.scores_by_group(ALPHA[0], [f"img{i}" for i in range(6)])
    group = Group("synthetic", "test", "quick", "smoke", folder=None, rows=[row])
    assert group.sequences == []


def test_results_table_of_no_rows_is_empty_with_columns():
    table = results_table([])
    assert table.empty and {"miou", "seed", "method"} <= set(table.columns)


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


def test_training_seconds_of_a_row_count_what_reused_weights_cost():
    assert train_seconds({"fit_s": 3.0}) == 3.0
    assert (
        train_seconds({"fit_s": 0.2, "checkpoint": {"reused": True, "train_seconds": 99.0}}) == 99
    )
    assert train_seconds({"fit_s": 7.0, "checkpoint": {"reused": False, "train_seconds": 6.5}}) == 7
    assert math.isnan(train_seconds({}))


def test_learning_curve_accumulates_seconds_and_skips_rows_without_them():
    row = {"fit_summary": {"history": [{"epoch": 0, "loss": 2.0, "seconds": 30.0},
                                       {"epoch": 1, "loss": 1.0, "seconds": 31.5}]}}  # fmt: skip
    curve = learning_curve(row)
    assert [e["elapsed"] for e in curve] == [30.0, 61.5]
    assert [e["loss"] for e in curve] == [2.0, 1.0]
    assert learning_curve({"fit_summary": {"history": [{"epoch": 0, "loss": 1.0}]}}) == []
    assert learning_curve({"fit_s": 1.0}) == []


def test_the_report_links_the_studies_of_its_store(tmp_path):
    from bench.report.markdown import study_lines

    assert study_lines(tmp_path) == []
    bench_dir = tmp_path / "benchmarks"
    bench_dir.mkdir()
    (bench_dir / "crf_iterations.md").write_text("intro\n# Dense CRF iterations\n")
    (bench_dir / "crf_iterations.png").write_bytes(b"png")
    lines = study_lines(tmp_path)
    assert "- [Dense CRF iterations](benchmarks/crf_iterations.md)" in lines
    assert "![crf_iterations](benchmarks/crf_iterations.png)" in lines
