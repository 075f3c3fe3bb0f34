"""The grid on Dask: a LocalCluster writes the rows a serial run writes, survives a lost worker."""

import json

import pytest

from bench.config import parse_config
from bench.distributed import check_shared_store, connect, run_config_distributed
from bench.errors import SegbenchError
from bench.runner import run_config


def config(*methods, **extra):
    return parse_config({
        "name": "d", "dataset": "synthetic", "dataset_options": {"size": [32, 40]},
        "train_subset": 4, "eval_subset": 5, "bootstrap": 50, "sample_images": 1,
        "seeds": [0, 1], "methods": list(methods), **extra,
    })  # fmt: skip


@pytest.fixture(scope="module")
def client():
    c = connect("local:2")
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def _rows(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


SCORES = ("miou", "global_acc", "mean_acc", "confusion", "per_class_iou", "miou_ci_low",
          "miou_ci_high", "per_sequence", "status", "fingerprint")  # fmt: skip


def test_a_local_cluster_writes_the_rows_a_serial_run_writes(tmp_path, client):
    cfg = config(
        "class_prior",
        {"name": "colour_forest", "params": {"n_estimators": 3, "pixels_per_image": 200,
                                              "n_jobs": 1}},
        {"name": "superpixel", "params": {"n_segments": 40, "n_estimators": 3, "n_jobs": 1}},
    )  # fmt: skip
    serial = run_config(cfg, results_dir=tmp_path / "a", runs_dir=tmp_path / "ra")
    spread = run_config_distributed(
        cfg, client, results_dir=tmp_path / "b", runs_dir=tmp_path / "rb"
    )
    assert [(r["method"], r["seed"]) for r in spread] == [(r["method"], r["seed"]) for r in serial]
    a, b = _rows(tmp_path / "a/rows/quick/d"), _rows(tmp_path / "b/rows/quick/d")
    assert a.keys() == b.keys() and len(a) == 6
    for name in a:
        assert {k: a[name][k] for k in SCORES} == {k: b[name][k] for k in SCORES}, name
    # resume works across the two: the serial store's rows are all reused by the cluster
    again = run_config_distributed(
        cfg, client, results_dir=tmp_path / "a", runs_dir=tmp_path / "ra"
    )
    assert [r["started"] for r in again] == [r["started"] for r in serial]


def test_a_worker_lost_mid_task_loses_nothing(tmp_path, client):
    marker = tmp_path / "died"
    cfg = config("class_prior", {"name": "fake_methods:DieOnce", "params": {"marker": str(marker)}})
    rows = run_config_distributed(cfg, client, results_dir=tmp_path / "s", runs_dir=tmp_path / "r")
    assert marker.is_file()  # a worker really died in a fit
    assert [(r["method"], r["seed"], r["status"]) for r in rows] == [
        ("class_prior", 0, "ok"), ("class_prior", 1, "ok"),
        ("DieOnce", 0, "ok"), ("DieOnce", 1, "ok"),
    ]  # fmt: skip
    stored = _rows(tmp_path / "s/rows/quick/d")
    assert sorted(stored) == ["DieOnce.seed0.json", "DieOnce.seed1.json",
                              "class_prior.seed0.json", "class_prior.seed1.json"]  # fmt: skip
    # the cluster replaced the worker it lost
    assert len(client.scheduler_info()["workers"]) >= 1


def test_a_failed_method_is_a_failed_row_and_bad_input_stops(tmp_path, client):
    cfg = config("class_prior", {"name": "fake_methods:Boom"})
    rows = run_config_distributed(cfg, client, results_dir=tmp_path / "s", runs_dir=tmp_path / "r")
    assert {r["method"]: r["status"] for r in rows} == {"class_prior": "ok", "Boom": "failed"}
    with pytest.raises(SegbenchError, match="no method with id nope"):
        run_config_distributed(cfg, client, only=["nope"], results_dir=tmp_path / "s")


class FakeClient:
    def __init__(self, result):
        self.result = result

    def run(self, fn, *args):
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_a_store_the_workers_do_not_share_is_refused(tmp_path):
    with pytest.raises(SegbenchError, match="does not see"):
        check_shared_store(FakeClient({"tcp://w1": ".probe-x"}), tmp_path)
    with pytest.raises(SegbenchError, match="a worker cannot write the results store"):
        check_shared_store(FakeClient(PermissionError("denied")), tmp_path)


@pytest.mark.parametrize("address", ["local:0", "local:x"])
def test_a_bad_local_address_is_one_message(address):
    with pytest.raises(SegbenchError, match="local:N with N >= 1"):
        connect(address)


def _pools():
    import joblib
    import torch

    return torch.get_num_threads(), joblib.effective_n_jobs(-1)


def test_local_workers_share_the_cores_out(client):
    import os

    per_worker = max(1, len(os.sched_getaffinity(0)) // 2)
    pools = client.run(_pools)
    assert len(pools) == 2
    assert set(pools.values()) == {(per_worker, per_worker)}


def test_the_distributed_benchmark_times_both_runs_of_one_config(tmp_path):
    import yaml

    from bench.distributed_benchmark import measure, to_markdown

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "dataset": "synthetic", "dataset_options": {"size": [32, 40]},
        "train_subset": 4, "eval_subset": 5, "bootstrap": 20, "sample_images": 1,
        "seeds": [0, 1], "methods": ["class_prior", {"name": "colour_forest", "params": {
            "n_estimators": 3, "pixels_per_image": 200, "n_jobs": 1}}],
    }))  # fmt: skip
    result = measure(str(path), workers=2, work=tmp_path / "work")
    for name in ("serial", "local:2"):
        run = result["runs"][name]
        assert run["units"] == 4 and len(run["scores"]) == 4
        assert 0 <= run["longest_unit_s"] <= run["work_s"] <= run["wall_s"]
    # the same rows either way (single-threaded methods): the scores agree exactly
    assert result["rows_compared"] == 4 and result["different_rows"] == []
    assert result["speedup"] > 0
    assert "Speed-up of `local:2` over serial" in to_markdown(result)
