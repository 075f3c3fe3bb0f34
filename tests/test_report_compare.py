"""A user's store reported against the reference: differences, identical rows, time ratios."""

from __future__ import annotations

import json
import math

import pytest
from report_rows import ENV, make_row, per_image_cms, stub_figures, table_line, write_rows

from bench.report import write_report
from bench.report.compare import (
    COMPARISON_HEADER,
    GroupComparison,
    Pair,
    comparison_body,
    same_value,
)

USER_CMS = per_image_cms(200, 0)
OTHER_CMS = per_image_cms(190, 5)


@pytest.fixture()
def stores(tmp_path, monkeypatch) -> dict:
    stub_figures(monkeypatch)
    user, reference = tmp_path / "runs" / "results", tmp_path / "results"
    write_rows(
        user,
        [
            make_row("alpha", USER_CMS, seed=0),
            make_row("alpha", USER_CMS, seed=1),
            make_row("beta", per_image_cms(60, 1), seed=0),
        ],
        samples=False,
    )
    write_rows(user, [make_row("alpha", USER_CMS, profile="full")], samples=False)
    ref_alpha1 = make_row(
        "alpha",
        OTHER_CMS,
        seed=1,
        fit_s=3.0,
        predict_ms_median=6.0,
        environment={**ENV, "cpu": "Ref CPU 1", "cpu_count": 16},
        provenance={"git_commit": "0ld", "dirty": False, "code_hash": "other", "lock_hash": "x"},
    )
    write_rows(
        reference,
        [make_row("alpha", USER_CMS, seed=0), ref_alpha1, make_row("gamma", OTHER_CMS, seed=0)],
        samples=False,
    )
    write_report(user, reference_dir=reference)
    readme = (user / "README.md").read_text()
    return {"user": user, "reference": reference, "readme": readme, "ref_alpha1": ref_alpha1}


def comparison_part(readme: str) -> str:
    return readme[readme.index("### Against the reference") :]


def test_pairs_show_difference_identical_flag_and_ratios(stores):
    part = comparison_part(stores["readme"])
    header = next(ln for ln in part.splitlines() if ln.startswith("| method |"))
    assert [c.strip() for c in header.strip("|").split("|")] == COMPARISON_HEADER

    same = table_line(part, "alpha")
    assert same[1] == "0"
    assert same[4:8] == ["0", "identical", "1.00x", "1.00x"]
    assert same[8] == same[9] == "Test CPU 9000 (2 cores)"
    assert same[10] == ""

    user_alpha1 = make_row("alpha", USER_CMS, seed=1)
    ref = stores["ref_alpha1"]
    line = next(ln for ln in part.splitlines() if ln.startswith("| alpha | 1 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == f"{100 * user_alpha1['miou']:.2f}"
    assert cells[3] == f"{100 * ref['miou']:.2f}"
    assert cells[4] == f"{100 * (user_alpha1['miou'] - ref['miou']):+.2f}"
    # user / reference: fit 1.5 s against 3.0 s, 12 ms against 6 ms.
    assert cells[5:8] == ["no", "0.50x", "2.00x"]
    assert cells[8:10] == ["Test CPU 9000 (2 cores)", "Ref CPU 1 (16 cores)"]
    assert cells[10] == "reference computed by other code"

    assert "- only here: `beta` seed 0" in part
    assert "- only in the reference: `gamma` seed 0" in part


def test_summary_line_counts_identical_and_max_difference(stores):
    summary = next(ln for ln in stores["readme"].splitlines() if ln.startswith("**Against"))
    diff = abs(make_row("alpha", USER_CMS)["miou"] - stores["ref_alpha1"]["miou"])
    assert "[`../../results/`](../../results/README.md)" in summary
    assert "2 (config, method, seed) in both stores, 1 of them identical" in summary
    assert f"max |mIoU difference| {100 * diff:.2f} points (`alpha` seed 1" in summary
    assert "1 rows only here and 1 only in the reference" in summary
    assert "1 of the reference rows computed by other code" in summary
    assert "not in the reference: `full/smoke`" in summary
    # Only groups in both stores get a comparison subsection.
    assert stores["readme"].count("### Against the reference") == 1


def test_unreadable_reference_is_said_and_the_report_still_written(tmp_path, monkeypatch):
    stub_figures(monkeypatch)
    user, reference = tmp_path / "user", tmp_path / "reference"
    write_rows(user, [make_row("alpha", USER_CMS)], samples=False)
    folder = write_rows(reference, [make_row("alpha", USER_CMS)], samples=False)
    old = json.loads((folder / "alpha.seed0.json").read_text())
    old["schema_version"] = 1
    (folder / "alpha.seed0.json").write_text(json.dumps(old))
    write_report(user, reference_dir=reference)
    summary = next(
        ln for ln in (user / "README.md").read_text().splitlines() if ln.startswith("**Against")
    )
    assert "not compared" in summary and "alpha.seed0.json: row schema 1" in summary


def test_same_value_treats_nan_as_equal_and_nothing_else():
    assert same_value([1.0, math.nan], [1, math.nan])
    assert same_value({"a": {"miou": math.nan}}, {"a": {"miou": math.nan}})
    assert not same_value([0.5, math.nan], [0.5, 0.0])
    assert not same_value({"a": 1}, {"a": 1, "b": 2})
    assert not same_value([1.0], [1.0, 2.0])


def test_one_per_class_value_breaks_identical():
    user = make_row("alpha", USER_CMS)
    ref = json.loads(json.dumps(make_row("alpha", USER_CMS), default=lambda o: o.tolist()))
    assert Pair(user, ref).identical
    ref["per_class_iou"][2] = math.nextafter(ref["per_class_iou"][2], 1.0)
    pair = Pair(user, ref)
    assert not pair.identical and pair.diff == 0.0
    failed = make_row("alpha", None)
    assert not Pair(failed, user).identical and math.isnan(Pair(failed, user).diff)


def test_loaded_weights_are_noted_beside_the_fit_ratio():
    user = make_row("alpha", USER_CMS, checkpoint={"reused": True, "train_seconds": 9.0})
    ref = make_row("alpha", USER_CMS, checkpoint={"reused": False, "train_seconds": 9.0})
    gc = GroupComparison(("synthetic", "test", "quick", "smoke"), pairs=[Pair(user, ref)])
    assert comparison_body(gc)[0][-1] == "weights loaded here, not trained"
