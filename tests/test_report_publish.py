"""Publishing a report: all or nothing, stale figures removed, other people's files kept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from report_rows import make_row, per_image_cms, stub_figures, write_rows

from bench.errors import SegbenchError
from bench.report import figures, write_report
from bench.report.publish import MANIFEST

STUDY_FIGURE = "upsampling_quick_deep_cpu.png"


def snapshot(store) -> dict[str, bytes]:
    """Every file of a store outside ``rows/``, by relative path."""
    return {
        p.relative_to(store).as_posix(): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.relative_to(store).parts[0] != "rows"
    }


def with_study_files(store) -> None:
    """What the upsampling study writes into a store beside the report."""
    (store / "figures").mkdir(parents=True, exist_ok=True)
    (store / "figures" / STUDY_FIGURE).write_bytes(b"\x89PNG study")
    (store / "benchmarks").mkdir(exist_ok=True)
    (store / "benchmarks" / "upsampling.md").write_text("# study\n")


def test_stale_figures_go_study_files_stay(tmp_path, monkeypatch):
    stub_figures(monkeypatch)
    write_rows(tmp_path, [make_row("alpha", per_image_cms(150, 2), profile="full")])
    write_rows(tmp_path, [make_row("alpha", per_image_cms(150, 2))])
    with_study_files(tmp_path)
    (tmp_path / "figures" / "notes.txt").write_text("mine")
    write_report(tmp_path)
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"full_smoke_examples.png", "quick_smoke_examples.png", STUDY_FIGURE} <= names

    shutil.rmtree(tmp_path / "rows" / "full")  # the profile's rows are gone
    write_report(tmp_path)
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert not {n for n in names if n.startswith("full_")}
    assert {STUDY_FIGURE, "notes.txt", MANIFEST, "quick_smoke_examples.png"} <= names
    assert (tmp_path / "figures" / STUDY_FIGURE).read_bytes() == b"\x89PNG study"
    assert (tmp_path / "benchmarks" / "upsampling.md").read_text() == "# study\n"
    manifest = json.loads((tmp_path / "figures" / MANIFEST).read_text())["figures"]
    assert STUDY_FIGURE not in manifest and "quick_smoke_miou_vs_speed.png" in manifest

    shutil.rmtree(tmp_path / "rows")
    table = write_report(tmp_path)  # no rows left: an empty report, the study's files kept
    assert table.empty and len(pd.read_parquet(tmp_path / "results.parquet")) == 0
    assert "No runs yet" in (tmp_path / "README.md").read_text()
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        STUDY_FIGURE, "notes.txt", MANIFEST,
    }  # fmt: skip


def test_figures_of_an_older_report_are_judged_by_name(tmp_path, monkeypatch):
    """A figures/ folder from before the manifest: the report's own names go, others stay."""
    stub_figures(monkeypatch)
    write_rows(tmp_path, [make_row("alpha", per_image_cms(150, 2))], samples=False)
    with_study_files(tmp_path)
    legacy = ["device_gone_examples.png", "full_classical_confusion_texton_forest_s1.png"]
    for name in legacy + ["upsampling_full_deep_examples.png", "diagram.png"]:
        (tmp_path / "figures" / name).write_bytes(b"\x89PNG old")
    write_report(tmp_path)
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert not set(legacy) & names
    assert {STUDY_FIGURE, "upsampling_full_deep_examples.png", "diagram.png"} <= names


def test_failure_while_rendering_leaves_the_old_report(tmp_path, monkeypatch):
    stub_figures(monkeypatch)
    write_rows(tmp_path, [make_row("alpha", per_image_cms(150, 2), profile="full")])
    write_rows(tmp_path, [make_row("alpha", per_image_cms(150, 2))])
    with_study_files(tmp_path)
    write_report(tmp_path)
    before = snapshot(tmp_path)

    write_rows(tmp_path, [make_row("beta", per_image_cms(60, 1), profile="full")])
    calls = []

    def second_group_fails(group, path):
        calls.append(group.key)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        path.write_bytes(b"\x89PNG new")
        return path

    monkeypatch.setattr(figures, "plot_per_class_iou", second_group_fails)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_report(tmp_path)
    assert len(calls) == 2  # the first group's figures were rendered, then it failed
    assert snapshot(tmp_path) == before  # byte for byte: no new CSV, README or figure
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_old_schema_row_is_refused_and_nothing_written(tmp_path, monkeypatch):
    stub_figures(monkeypatch)
    folder = write_rows(tmp_path, [make_row("alpha", per_image_cms(150, 2))])
    write_report(tmp_path)
    before = snapshot(tmp_path)
    old = json.loads((folder / "alpha.seed0.json").read_text())
    old.pop("schema_version")  # the first layout had none
    (folder / "beta.json").write_text(json.dumps({**old, "method": "beta"}))
    with pytest.raises(SegbenchError) as info:
        write_report(tmp_path)
    message = str(info.value)
    assert "beta.json" in message and "schema 1" in message
    assert "segbench run" in message  # how to refresh it
    assert snapshot(tmp_path) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]

    (folder / "beta.json").unlink()
    empty = tmp_path / "fresh"
    write_rows(empty, [{**make_row("alpha", None), "schema_version": 1}])
    with pytest.raises(SegbenchError, match="schema 1"):
        write_report(empty)
    assert sorted(p.name for p in empty.iterdir()) == ["rows"]


def test_malformed_and_incomplete_rows_name_the_file(tmp_path):
    folder = write_rows(tmp_path, [make_row("alpha", per_image_cms(9, 0))], samples=False)
    (folder / "bad.seed0.json").write_text('{"method": "bad", ')
    with pytest.raises(SegbenchError, match=r"bad\.seed0\.json: not valid JSON"):
        write_report(tmp_path)
    (folder / "bad.seed0.json").unlink()
    row = json.loads((folder / "alpha.seed0.json").read_text())
    del row["per_class_iou"]
    (folder / "alpha.seed0.json").write_text(json.dumps(row))
    with pytest.raises(SegbenchError, match=r"alpha\.seed0\.json: missing key\(s\) per_class_iou"):
        write_report(tmp_path)
    assert not (tmp_path / "README.md").exists()


def test_missing_rows_folder_is_an_empty_report(tmp_path):
    write_report(tmp_path)
    assert "No runs yet" in (tmp_path / "README.md").read_text()


def test_leftovers_of_a_killed_report_are_cleaned_and_study_files_recovered(tmp_path, monkeypatch):
    """A kill between the two renames of figures/ leaves the study's figure in the old folder."""
    stub_figures(monkeypatch)
    write_rows(tmp_path, [make_row("alpha", per_image_cms(150, 2))], samples=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    staging = tmp_path / f".report-staging-{dead}-0000abcd"
    (staging / "figures").mkdir(parents=True)
    (staging / "results.csv").write_text("half")
    old = tmp_path / f".figures-old-{dead}-0000abcd"
    old.mkdir()
    (old / STUDY_FIGURE).write_bytes(b"\x89PNG study")
    (old / "gone_smoke_examples.png").write_bytes(b"\x89PNG report")
    write_report(tmp_path)
    assert not staging.exists() and not old.exists()
    assert (tmp_path / "figures" / STUDY_FIGURE).read_bytes() == b"\x89PNG study"
    assert not (tmp_path / "figures" / "gone_smoke_examples.png").exists()
