"""Provenance rule 2: what is hashed into a row is what decides its numbers, nothing more."""

import json
import shutil

import pytest

from bench import provenance as prov
from bench import restamp
from bench.datasets.root import REPO_ROOT
from bench.restamp import restamp_group


def _keys(module):
    return {prov.file_key(p) for p in prov.code_files(module)}


def test_the_hash_holds_method_and_harness_but_not_parser_registry_or_itself():
    files = _keys("baselines.class_prior") | _keys("bench.runner")
    assert {"baselines/class_prior.py", "bench/runner.py", "bench/metrics.py",
            "bench/datasets/camvid.py", "bench/rows.py"} <= files  # fmt: skip
    assert not files & {"bench/config.py", "bench/provenance.py", "bench/methods.py",
                        "bench/errors.py"}  # fmt: skip


def test_a_method_module_that_imports_the_parser_still_hashes_it():
    # NOT_HASHED leaves a module out of the closure of *others*, never out of its own hash
    assert "bench/config.py" in _keys("bench.config")


def test_pins_are_those_of_what_the_code_imports():
    lock = (REPO_ROOT / "requirements.lock").read_text()
    forest = prov.dependency_pins("baselines.class_prior", lock_text=lock)
    assert any(p.startswith("scikit-learn==") for p in forest)
    assert not any(p.startswith("pydensecrf2==") for p in forest)
    crf = prov.dependency_pins("baselines.dense_crf", lock_text=lock)
    assert any(p.startswith("pydensecrf2==") for p in crf)
    # a requirement of an imported package counts (scikit-learn needs joblib)
    assert any(p.startswith("joblib==") for p in forest)


def test_a_package_added_for_another_method_changes_no_pin_but_an_upgrade_does():
    lock = (REPO_ROOT / "requirements.lock").read_text()
    before = prov.dependency_pins("baselines.class_prior", "bench.runner", lock_text=lock)
    added = prov.dependency_pins(
        "baselines.class_prior", "bench.runner", lock_text=lock + "\nsomething-new==1.0\n"
    )
    assert added == before
    numpy = next(line for line in lock.splitlines() if line.lower().startswith("numpy=="))
    upgraded = prov.dependency_pins(
        "baselines.class_prior", "bench.runner", lock_text=lock.replace(numpy, "numpy==99.0")
    )
    assert upgraded != before and "numpy==99.0" in upgraded


def test_lock_pins_reads_names_as_pep503_compares_them():
    pins = prov.lock_pins("Jinja2==3.1.6\ntyping_extensions==4.1  # why\n-e .\n\n")
    assert pins == {"jinja2": "Jinja2==3.1.6", "typing-extensions": "typing_extensions==4.1"}


# -- restamping rows stored under rule 1 ---------------------------------------------------------


def _rule1_copy(tmp_path, group="quick/select_superpixel"):
    """A copy of a committed group with its rows put back to their recorded rule-1 stamps."""
    src = REPO_ROOT / "results" / "rows" / group
    dst = tmp_path / "rows" / group
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.npz", "*.png"))
    restored = 0
    for path in dst.glob("*.json"):
        row = json.loads(path.read_text())
        old = row["provenance"].pop("restamped", None)
        if old is None:
            continue
        row["provenance"].update(code_hash=old["code_hash"], lock_hash=old["lock_hash"])
        row["fingerprint"] = old["fingerprint"]
        path.write_text(json.dumps(row))
        restored += 1
    if not restored:
        pytest.skip("the committed rows of this group were computed under rule 2")
    commit = row["provenance"]["git_commit"]
    try:
        restamp._tree(commit)
    except Exception:  # noqa: BLE001 - a shallow clone lacks the commit: nothing to replay
        pytest.skip(f"commit {commit} is not in this clone's history")
    return src, dst


def test_restamp_replays_rule_1_and_gives_the_committed_rule_2_stamps(tmp_path):
    src, dst = _rule1_copy(tmp_path)
    done = restamp_group(dst)
    assert done and all(what.startswith("restamped") for _, what in done)
    for path in dst.glob("*.json"):
        ours, committed = json.loads(path.read_text()), json.loads((src / path.name).read_text())
        assert ours["fingerprint"] == committed["fingerprint"]
        assert ours["provenance"]["code_hash"] == committed["provenance"]["code_hash"]
        assert ours["miou"] == committed["miou"]
    # rule 2 rows are left alone
    assert {what for _, what in restamp_group(dst)} == {"already rule 2"}


@pytest.mark.parametrize(
    ("field", "reason"),
    [("code_hash", "code hash is not rule 1's"), ("lock_hash", "lock hash is not rule 1's"),
     ("fingerprint", "fingerprint is not the runner's"), ("dirty", "no single clean commit")],
)  # fmt: skip
def test_restamp_leaves_a_row_whose_record_does_not_replay(tmp_path, field, reason):
    _, dst = _rule1_copy(tmp_path)
    path = sorted(dst.glob("*.json"))[0]
    row = json.loads(path.read_text())
    if field == "fingerprint":
        row["fingerprint"] = "0" * 16
    elif field == "dirty":
        row["provenance"]["dirty"] = True
    else:
        row["provenance"][field] = "0" * 16
    path.write_text(json.dumps(row))
    before = path.read_bytes()
    done = dict(restamp_group(dst))
    assert reason in done[path.name]
    assert path.read_bytes() == before


def test_restamp_leaves_rows_whose_hashed_code_changed_since(tmp_path, monkeypatch):
    _, dst = _rule1_copy(tmp_path)
    real = restamp._here
    monkeypatch.setattr(
        restamp, "_here", lambda p: real(p) + (b"# edited\n" if p == "bench/metrics.py" else b"")
    )
    before = {p.name: p.read_bytes() for p in dst.glob("*.json")}
    done = restamp_group(dst)
    assert all("bench/metrics.py changed since" in what for _, what in done)
    assert {p.name: p.read_bytes() for p in dst.glob("*.json")} == before
