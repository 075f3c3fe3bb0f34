import json

import numpy as np

from bench import benchmarks
from bench.system import current_rss_mb, environment, peak_rss_mb, reset_peak_rss


def test_benchmarks_write_json_and_markdown(tmp_path, camvid_root, monkeypatch):
    small = benchmarks.evaluator_throughput(str(camvid_root), n_images=2, repeats=1)
    assert set(small["mpix_per_s"]) == {"segbench", "bincount", "sklearn", "torchmetrics"}
    assert all(v > 0 for v in small["mpix_per_s"].values())
    assert small["megapixels"] == 2 * 360 * 480 / 1e6

    monkeypatch.setattr(benchmarks, "evaluator_throughput", lambda data_root: small)
    monkeypatch.setattr(
        benchmarks, "decode_time", lambda data_root: {"n_images": 1, "seconds": 0.5,
                                                      "ms_per_pair": 500.0}
    )  # fmt: skip
    benchmarks.run("all", out_dir=tmp_path)
    saved = json.loads((tmp_path / "evaluator.json").read_text())
    assert saved["command"] == "segbench benchmark evaluator"
    assert "| segbench |" in (tmp_path / "evaluator.md").read_text()
    assert "0.50 s" in (tmp_path / "decode.md").read_text()


def test_decode_time_on_a_slice(camvid_copy):
    r = benchmarks.decode_time(str(camvid_copy), repeats=1)
    assert r["n_images"] == 3 and r["seconds"] > 0


def test_peak_memory_sees_a_big_allocation_and_resets():
    assert reset_peak_rss()
    base = peak_rss_mb()
    block = np.ones(200 * 1024 * 1024 // 8)  # 200 MiB, touched
    assert peak_rss_mb() > base + 150
    assert current_rss_mb() > base + 150
    del block
    reset_peak_rss()
    assert peak_rss_mb() < base + 150


def test_environment_names_the_machine(tmp_path):
    env = environment(tmp_path)  # not a git repo: no commit, no crash
    assert env["cpu"] and env["cpu_count"] >= 1 and env["numpy"] and env["git_commit"] == ""
