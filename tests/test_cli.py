"""The command line: messages without tracebacks, exit codes, evaluate's JSON."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.cli import main
from bench.datasets import CamVid
from bench.datasets.io import write_label


def test_evaluate_writes_the_documented_json(tmp_path, camvid_copy, capsys):
    ds = CamVid("test", root=camvid_copy)
    pred_dir = tmp_path / "pred"
    for i in range(len(ds)):
        label = ds.native_label(i).copy()
        label[label == 11] = 0
        write_label(pred_dir / f"{ds.names[i]}.png", label)
    out = tmp_path / "scores.json"
    code = main(
        ["evaluate", "--pred-dir", str(pred_dir), "--split", "test",
         "--data-root", str(camvid_copy), "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    scores = json.loads(out.read_text())
    assert scores["miou"] == pytest.approx(1.0)
    assert set(scores) >= {"miou", "global_acc", "mean_acc", "fwiou", "per_class_iou"}
    assert len(scores["per_class_iou"]) == 11
    assert "mIoU" in capsys.readouterr().out


def test_evaluate_missing_prediction_is_a_clear_error(tmp_path, camvid_copy, capsys):
    (tmp_path / "pred").mkdir()
    code = main(["evaluate", "--pred-dir", str(tmp_path / "pred"), "--data-root", str(camvid_copy)])
    err = capsys.readouterr().err
    assert code == 2
    assert "0001TP_008550.png: file not found" in err and "Traceback" not in err


def test_evaluate_wrong_size_and_value(tmp_path, camvid_copy, capsys):
    ds = CamVid("test", root=camvid_copy)
    pred_dir = tmp_path / "pred"
    for name in ds.names:
        write_label(pred_dir / f"{name}.png", np.zeros((360, 480), np.uint8))
    write_label(pred_dir / f"{ds.names[1]}.png", np.zeros((10, 10), np.uint8))
    assert main(["evaluate", "--pred-dir", str(pred_dir), "--data-root", str(camvid_copy)]) == 2
    assert "prediction is 10x10, its label is 480x360" in capsys.readouterr().err
    write_label(pred_dir / f"{ds.names[1]}.png", np.full((360, 480), 12, np.uint8))
    assert main(["evaluate", "--pred-dir", str(pred_dir), "--data-root", str(camvid_copy)]) == 2
    assert "value 12 is outside 0..10" in capsys.readouterr().err


def test_run_unknown_config_key_exits_2_without_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("methods: [class_prior]\nsplt: test\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", str(cfg)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "bad.yaml: unknown config key 'splt'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_check_passes_on_the_shared_copy_and_fails_on_a_broken_one(
    camvid_root, camvid_copy, capsys
):
    assert main(["data", "check", "--data-root", str(camvid_root)]) == 0
    assert "all 1405 files match" in capsys.readouterr().out
    assert main(["data", "check", "--data-root", str(camvid_copy)]) == 2
    err = capsys.readouterr().err
    assert "files fail verification" in err and "missing" in err


def _cli_config(tmp_path, monkeypatch, methods, **extra):
    """A tiny synthetic config file; the CLI's run writes predictions under tmp_path."""
    import yaml

    import bench.runner

    real = bench.runner.run_config
    monkeypatch.setattr(
        bench.runner, "run_config", lambda cfg, **kw: real(cfg, runs_dir=tmp_path / "runs", **kw)
    )
    data = {
        "name": "t", "dataset": "synthetic", "dataset_options": {"size": [32, 40]},
        "train_subset": 4, "eval_subset": 5, "bootstrap": 20, "sample_images": 1,
        "methods": methods, **extra,
    }  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return ["run", str(path), "--store", str(tmp_path / "store"), "--no-report"]


def test_a_failed_row_makes_run_exit_1_and_keeps_the_others(tmp_path, monkeypatch, capsys):
    args = _cli_config(tmp_path, monkeypatch, ["class_prior", {"name": "fake_methods:Boom"}])
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 row(s) failed: Boom (seed 0)" in err and "Traceback" not in err
    rows = sorted(p.name for p in (tmp_path / "store" / "rows" / "quick" / "t").glob("*.json"))
    assert rows == ["Boom.seed0.json", "class_prior.seed0.json"]


def test_a_run_without_failures_exits_0(tmp_path, monkeypatch):
    assert main(_cli_config(tmp_path, monkeypatch, ["class_prior"])) == 0


def test_a_yaml_syntax_error_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: t\nmethods: [class_prior\nsplit: test\n")
    assert main(["run", str(cfg), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml: not valid YAML" in err and "line" in err


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("split", "tset", "no split 'tset'"), ("dataset", "camvidd", "unknown dataset 'camvidd'")],
)
def test_an_unknown_split_or_dataset_is_named_before_the_group_check(
    tmp_path, monkeypatch, capsys, key, value, message
):
    # a group of the same name made by another config is already in the store: the message
    # must still be about the name that does not exist, not about "other settings"
    assert main(_cli_config(tmp_path, monkeypatch, ["class_prior"])) == 0
    capsys.readouterr()
    args = _cli_config(tmp_path, monkeypatch, ["class_prior"], **{key: value})
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "other settings" not in err


@pytest.mark.parametrize("kind", ["folder", "not utf-8"])
def test_a_config_that_is_not_text_is_one_line(tmp_path, capsys, kind):
    cfg = tmp_path / "c.yaml"
    if kind == "folder":
        cfg.mkdir()
    else:
        cfg.write_bytes(b"name: t\xff\xfe\n")
    assert main(["run", str(cfg), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg}: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_dataset_error_names_the_config(tmp_path, monkeypatch, capsys):
    args = _cli_config(tmp_path, monkeypatch, ["class_prior"], split="tset")
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'c.yaml'}: synthetic has no")
