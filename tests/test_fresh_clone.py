"""A new user's clone: their run really runs, writes their own rows, leaves the reference alone.

The clone is made with ``git clone`` and then given the working tree's files (tracked and
untracked-but-not-ignored), so the test checks the code as it stands, committed or not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.datasets.root import REPO_ROOT
from bench.rows import load_rows, read_row

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True
    ).stdout


def _clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "--quiet", str(REPO_ROOT), str(clone))
    files = _git(REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    present = {rel for rel in files.split("\0") if rel and (REPO_ROOT / rel).is_file()}
    for rel in present:
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, clone / rel)
    for rel in filter(None, _git(clone, "ls-files", "-z").split("\0")):
        if rel not in present:
            (clone / rel).unlink()  # deleted in the working tree
    _git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    _git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tree",
         "--allow-empty")  # fmt: skip
    return clone


def _segbench(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(clone)}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_fresh_clone_runs_for_its_user_and_keeps_the_reference(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    # the maintainer's reference rows of the smoke config, committed in the clone
    done = _segbench(clone, "run", "configs/smoke.yaml", "--reference")
    assert done.returncode == 0, done.stderr
    _git(clone, "add", "-A", "results")
    _git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "ref")
    reference_rows = {p: p.read_bytes() for p in (clone / "results" / "rows").rglob("*.json")}
    assert any("smoke" in str(p) for p in reference_rows)

    # the user's run: really runs (no "done before"), writes to runs/results
    user = _segbench(clone, "run", "configs/smoke.yaml")
    assert user.returncode == 0, user.stderr
    assert "done before" not in user.stderr
    assert "fitting on" in user.stderr
    mine = load_rows(clone / "runs" / "results")
    assert {r["method"] for r in mine} == {"class_prior", "colour_forest"}
    # the reference is untouched, byte for byte, and git sees no change under results/
    assert {p: p.read_bytes() for p in reference_rows} == reference_rows
    assert _git(clone, "status", "--porcelain", "--", "results") == ""
    # same machine, same code, same threads: the user's scores equal the reference's
    for row in mine:
        stem = Path(row["row_file"]).name
        ref = read_row(clone / "results" / "rows" / "quick" / "smoke" / stem)
        assert row["miou"] == ref["miou"] and row["per_class_iou"] == ref["per_class_iou"]
        assert row["provenance"]["code_hash"] == ref["provenance"]["code_hash"]
        assert row["provenance"]["dirty"] is False  # results/ and runs/ do not count
    # the user's report compares with the reference
    report = (clone / "runs" / "results" / "README.md").read_text()
    assert "Against the reference" in report
    for method in ("class_prior", "colour_forest"):
        line = next(x for x in report.splitlines() if x.startswith(f"| {method} | 0 |"))
        assert "| identical |" in line, line

    # resume within the user's own runs
    again = _segbench(clone, "run", "configs/smoke.yaml", "--no-report")
    assert again.returncode == 0 and "done before" in again.stderr


def test_committed_reference_rows_have_the_current_schema() -> None:
    """Every committed row reads with this code's schema (else the message says how to refresh)."""
    rows = load_rows(REPO_ROOT / "results")
    assert rows, "the reference store holds no rows"
    for row in rows:
        assert row["provenance"]["git_commit"], row["row_file"]
        assert not row["provenance"]["dirty"], row["row_file"]
        json.dumps(row)  # plain JSON values only
