"""`segbench promote`: whole groups, all or nothing, never a current row replaced by a stale one."""

import json
import shutil

import pytest

from bench.config import parse_config
from bench.errors import SegbenchError
from bench.runner import run_config
from bench.store import promote

GROUP = "rows/quick/st"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A user's store with real rows (this checkout's provenance) of two methods, two seeds."""
    root = tmp_path_factory.mktemp("store")
    cfg = parse_config({
        "name": "st", "dataset": "synthetic", "dataset_options": {"size": [32, 40]},
        "train_subset": 4, "eval_subset": 4, "bootstrap": 20, "sample_images": 1,
        "seeds": [0, 1], "methods": ["class_prior", {"name": "colour_forest", "params": {
            "n_estimators": 3, "pixels_per_image": 200, "n_jobs": 1}}],
    })  # fmt: skip
    run_config(cfg, results_dir=root / "mine", runs_dir=root / "runs")
    return root / "mine"


def _edit(path, **fields):
    row = json.loads(path.read_text())
    for key, value in fields.items():
        if key == "code_hash":
            row["provenance"]["code_hash"] = value
        else:
            row[key] = value
    path.write_text(json.dumps(row))


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"  # the runner's lock file is not copied
    }


def test_promote_replaces_whole_groups(tmp_path, store):
    source, reference = tmp_path / "src", tmp_path / "ref"
    shutil.copytree(store, source)
    promote(source, reference)
    assert _files(reference / GROUP) == _files(source / GROUP)
    # a method gone from the user's group is gone from the reference too
    for path in (source / GROUP).glob("colour_forest.*"):
        path.unlink()
    promote(source, reference, ["st"])
    assert not list((reference / GROUP).glob("colour_forest.*"))
    assert len(list((reference / GROUP).glob("class_prior.*.json"))) == 2


def test_a_bad_row_or_an_unknown_config_changes_nothing(tmp_path, store):
    source, reference = tmp_path / "src", tmp_path / "ref"
    shutil.copytree(store, source)
    promote(source, reference)
    before = _files(reference)
    (source / GROUP / "class_prior.seed1.json").write_text("{not json")
    with pytest.raises(SegbenchError, match="class_prior.seed1.json"):
        promote(source, reference)
    with pytest.raises(SegbenchError, match="no rows of config"):
        promote(source, reference, ["nope"])
    assert _files(reference) == before


def test_a_current_reference_unit_is_not_replaced_by_other_codes_rows(tmp_path, store, caplog):
    source, reference = tmp_path / "src", tmp_path / "ref"
    shutil.copytree(store, source)
    promote(source, reference)
    before = _files(reference / GROUP)
    # the user's store: seed 0 of colour_forest computed by other code, seed 1 recomputed
    _edit(source / GROUP / "colour_forest.seed0.json", code_hash="0000000000000000")
    _edit(source / GROUP / "colour_forest.seed1.json", started="2030-01-01T00:00:00+00:00")
    promote(source, reference)
    after = _files(reference / GROUP)
    assert after["colour_forest.seed0.json"] == before["colour_forest.seed0.json"]
    assert after["colour_forest.seed0.cm.npz"] == before["colour_forest.seed0.cm.npz"]
    assert "2030-01-01" in after["colour_forest.seed1.json"].decode()
    assert "kept the reference's" in caplog.text and "colour_forest.seed0" in caplog.text
    # a stale unit the reference does not hold as current is promoted as it is (the report
    # flags it): nothing better exists
    _edit(reference / GROUP / "class_prior.seed0.json", code_hash="1111111111111111")
    _edit(source / GROUP / "class_prior.seed0.json", code_hash="2222222222222222")
    promote(source, reference)
    assert "2222222222222222" in (reference / GROUP / "class_prior.seed0.json").read_text()
