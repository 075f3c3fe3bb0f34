"""The GPU path (deep/device.py), on the CPU: pack, train as the device would, receive, score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.config import load_config
from bench.datasets.io import read_rgb
from bench.errors import SegbenchError
from bench.runner import run_config
from deep.device import CHUNK, main, pack, receive, train, unpack

FCN = {"arch": "fcn8s", "width": 4, "epochs": 2, "batch_size": 2, "crop": None,
       "precision": "fp32", "n_threads": 1, "keep": "best"}  # fmt: skip


def write_config(path: Path, camvid_root: Path, **fcn) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "dev", "profile": "quick", "dataset": "camvid", "data_root": str(camvid_root),
        "resolution": [48, 64], "train_subset": 4, "eval_subset": 2, "bootstrap": 20,
        "methods": [{"name": "fcn", "id": "tiny", "params": {**FCN, **fcn}},
                    {"name": "class_prior"}],
    }))  # fmt: skip
    return path


@pytest.fixture()
def packed(tmp_path, camvid_root):
    config = write_config(tmp_path / "dev.yaml", camvid_root)
    parts = tmp_path / "device"
    # a small part size, so that the data is cut into several parts
    description = pack(config, out=parts, part_bytes=600_000)
    return config, parts, description


def test_pack_cuts_parts_and_unpack_gives_the_same_pixels(packed, tmp_path, camvid_root):
    config, parts, description = packed
    assert description["parts"] >= 2
    for k in range(1, description["parts"] + 1):
        size = sum(f.stat().st_size for f in (parts / f"part{k}").rglob("*") if f.is_file())
        assert size <= 600_000 + (20_000 if k == 1 else 0)  # part1 also holds pack.json
    images = [e for e in description["files"] if e["how"] == "webp"]
    assert len(images) == 4 + 2  # train and val images; their labels and lists are copies
    dest = tmp_path / "rebuilt"
    unpack(parts, dest)
    for entry in images:
        original, rebuilt = camvid_root / entry["path"], dest / entry["path"]
        assert rebuilt.suffix == ".png"
        assert np.array_equal(read_rgb(original), read_rgb(rebuilt))
    for entry in description["files"]:
        if entry["how"] == "copy":
            assert (dest / entry["path"]).read_bytes() == (camvid_root / entry["path"]).read_bytes()
    assert not any("test/" in e["path"] for e in description["files"])  # test stays here


def test_unpack_names_a_missing_part_and_a_changed_file(packed, tmp_path):
    _, parts, description = packed
    last = parts / f"part{description['parts']}"
    last.rename(tmp_path / "aside")
    with pytest.raises(SegbenchError, match=f"part{description['parts']} missing"):
        unpack(parts, tmp_path / "x")
    (tmp_path / "aside").rename(last)
    entry = next(e for e in description["files"] if e["how"] == "copy")
    (parts / entry["stored"]).write_bytes(b"changed")
    with pytest.raises(SegbenchError, match="not the file packed"):
        unpack(parts, tmp_path / "y")


def test_train_there_receive_here_and_the_runner_reuses_the_weights(packed, tmp_path):
    config, parts, _ = packed
    device_runs, out = tmp_path / "device_runs", tmp_path / "OUT"
    exported = train(out, parts=parts, data_dir=tmp_path / "device_data", runs_dir=device_runs)
    assert len(exported) == 1
    sent = out / exported[0]
    manifest = json.loads((sent / "manifest.json").read_text())
    assert set(manifest["files"]) == {"last.pt", "meta.json", "best.pt"}  # keep: best
    assert len(list(out.rglob("*"))) - 1 <= 8  # files back, at most the tool's 8 (+ the folder)

    # a corrupt chunk is refused, nothing is placed
    here = tmp_path / "here_runs"
    chunk = sent / "last.pt.00"
    good = chunk.read_bytes()
    chunk.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(SegbenchError, match="do not add up"):
        receive(out, config, runs_dir=here)
    assert not (here / "checkpoints" / exported[0]).exists()
    chunk.write_bytes(good)

    # weights trained for other parameters are refused
    other = write_config(tmp_path / "other.yaml", load_config(config).data_root, epochs=3)
    with pytest.raises(SegbenchError, match="not a checkpoint this checkout trains"):
        receive(out, other, runs_dir=here)

    placed = receive(out, config, runs_dir=here)
    assert [p.name for p in placed] == exported
    assert json.loads((placed[0] / "device.json").read_text())["torch"]
    with pytest.raises(SegbenchError, match="exists already"):
        receive(out, config, runs_dir=here)

    rows = run_config(load_config(config), only=["tiny"], results_dir=tmp_path / "store",
                      runs_dir=here)  # fmt: skip
    (row,) = rows
    assert row["status"] == "ok"
    assert row["fit_summary"]["checkpoint"]["reused"] is True
    meta = json.loads((placed[0] / "meta.json").read_text())
    assert row["fit_summary"]["train_seconds"] == pytest.approx(meta["result"]["train_seconds"])


def test_chunks_cut_a_large_file(tmp_path):
    from deep.device import export

    folder = tmp_path / "fcn-0123456789abcdef"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"train": {"keep": "last"}}))
    data = np.random.default_rng(0).bytes(CHUNK + 10)
    (folder / "last.pt").write_bytes(data)
    n = export(folder, tmp_path / "out", {"torch": "x"})
    sent = tmp_path / "out" / folder.name
    assert n == 4  # last.pt in two chunks, meta.json, manifest.json
    assert (sent / "last.pt.00").stat().st_size == CHUNK
    assert (sent / "last.pt.00").read_bytes() + (sent / "last.pt.01").read_bytes() == data


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "o"), "--parts", str(tmp_path / "none")]) == 2
    assert "pack.json: not found" in capsys.readouterr().err


def test_train_refuses_before_fitting_when_the_keys_differ(packed, tmp_path):
    config, parts, description = packed
    index = parts / "part1" / "pack.json"
    data = json.loads(index.read_text())
    assert list(data["checkpoints"]) == ["tiny seed 0"]
    data["checkpoints"]["tiny seed 0"] = "fcn-0000000000000000"
    index.write_text(json.dumps(data))
    with pytest.raises(SegbenchError, match="computes checkpoint fcn-.* the packing machine"):
        train(tmp_path / "OUT", parts=parts, data_dir=tmp_path / "d", runs_dir=tmp_path / "r")
    assert not (tmp_path / "r" / "checkpoints").exists()  # nothing was trained
