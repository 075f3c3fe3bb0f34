"""DDP (deep/ddp.py): two processes train the same network, evaluation equals one process's."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.datasets import Synthetic
from deep.ddp import process_group
from deep.fcn import FCN, build_network
from deep.train import evaluate, load_arrays

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    with socket.socket() as sock:  # a free port for the rendezvous (torchrun takes no 0)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", f"--master_port={port}",
         str(HERE / "ddp_script.py"), str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_both_processes_end_with_the_same_networks(ddp_run):
    _, (a, b) = ddp_run
    for key in ("fcn", "patch"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)

    def scores(history):  # the epochs' seconds are each process's own
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert scores(a["patch_history"]) == scores(b["patch_history"])


def test_the_summed_evaluation_is_one_process_s_on_the_same_weights(ddp_run):
    _, (a, b) = ddp_run
    assert a["scores"] == b["scores"]
    val = Synthetic("val", n_images=5, size=(32, 40))
    net = build_network("fcn8s", "bilinear", val.n_classes, 4)
    net.load_state_dict(a["fcn"])
    alone = evaluate(net, load_arrays(val), torch.device("cpu"), 2, "fp32")
    assert alone == a["scores"]
    assert np.isfinite(alone["miou"])


def test_only_the_first_process_wrote_checkpoints_and_their_key_holds_the_count(ddp_run):
    out, (a, _) = ddp_run
    folders = sorted(p.name for p in (out / "ckpt").iterdir())
    assert len(folders) == 2  # one FCN, one patch network: no second copy by rank 1
    assert not list((out / "ckpt").rglob("*.tmp"))
    # a single process never takes the weights of two as its own
    train = Synthetic("train", n_images=8, size=(32, 40))
    val = Synthetic("val", n_images=5, size=(32, 40))
    alone = FCN(arch="fcn8s", width=4, epochs=2, batch_size=4, crop=[32, 32], device="cpu",
                n_threads=1, checkpoint_dir=str(out / "ckpt"), precision="fp32")  # fmt: skip
    assert alone.checkpoint_folder(train, val) != Path(a["fcn_dir"])
    assert process_group() == (0, 1)


def test_torchrun_of_a_config_trains_in_two_processes_and_scores_in_the_first(tmp_path):
    import json

    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "d", "dataset": "synthetic", "dataset_options": {"size": [32, 40]},
        "train_subset": 8, "eval_subset": 5, "bootstrap": 20, "sample_images": 1,
        "methods": ["class_prior", {"name": "fcn", "params": {
            "arch": "fcn8s", "width": 4, "epochs": 2, "batch_size": 4, "crop": [32, 32],
            "device": "cpu", "n_threads": 1, "precision": "fp32"}}],
    }))  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2",
         f"--master_port={port}", "-m", "deep.ddp", str(cfg), "--store", str(tmp_path / "s"),
         "--runs-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = tmp_path / "s" / "rows" / "quick" / "d"
    fcn = json.loads((rows / "fcn.seed0.json").read_text())
    assert fcn["status"] == "ok"
    assert fcn["fit_summary"]["checkpoint"] == {
        "reused": True, "processes": 2, "device": "cpu",
        "train_seconds": fcn["fit_summary"]["checkpoint"]["train_seconds"],
    }  # fmt: skip
    assert json.loads((rows / "class_prior.seed0.json").read_text())["status"] == "ok"


def test_ddp_benchmark_worker_times_its_steps(tmp_path, monkeypatch):
    """The benchmark's worker alone (no torchrun): one process, its step times written."""
    import argparse
    import json

    from deep.ddp_benchmark import worker

    monkeypatch.delenv("RANK", raising=False)
    out = tmp_path / "w.json"
    args = argparse.Namespace(threads=1, batch=2, width=4, crop=[32, 48], warmup=1, steps=3,
                              out=str(out))  # fmt: skip
    worker(args)
    r = json.loads(out.read_text())
    assert r["processes"] == 1 and len(r["step_s"]) == 3 and r["no_sync_step_s"] == []
    assert all(t > 0 for t in r["step_s"])
    assert r["parameters"] == sum(
        p.numel() for p in build_network("fcn8s", "bilinear", 11, 4).parameters()
    )
