"""Train a config's networks on a lent GPU machine; score them here, from the original files.

The development machine may borrow a GPU machine through the ``device`` tool, within its
limits: each call carries the checkout and at most 64 MiB in all (``../shared``, where the
data lives, does not travel), runs at most 10 minutes, and brings back at most 8 files of at
most 16 MiB; a session has 15 minutes of device time. CamVid's training images alone are 91 MiB
of PNG. So the work is cut in three steps:

1. **pack** (here): ``python -m deep.device pack CONFIG [--only ID ...]`` writes the files the
   config's training and validation splits read into ``runs/device/part1``, ``part2``, ...,
   each small enough to travel beside the checkout. PNG images are re-encoded as lossless WebP
   (about 30 % smaller on CamVid; the decoded pixels are compared with the original's at
   packing), every other file (labels, split lists) is copied. ``part1/pack.json`` lists every
   file with its part and the SHA-256 of its pixels (images) or bytes.
2. **train** (there): one call per part, each carrying its part (``carry:
   ["runs/device/partK"]``; what an earlier call carried stays on the warm machine), the last
   one running ``python3 -m deep.device train --out $OUT``. It rebuilds the data root from the
   parts (WebP back to PNG), checks every file against ``pack.json``, trains each network of
   the config with the method's own checkpoints (so a call cut off by its time limit resumes
   in the next), and writes each finished checkpoint folder to ``$OUT`` in chunks of at most
   15 MiB with a ``manifest.json`` (SHA-256 of every file, the GPU, torch's version).
3. **receive** (here): ``python -m deep.device receive FILES_AT`` joins and checks the chunks,
   checks that each folder's name is the checkpoint key this checkout computes for the config
   (same parameters, data description and code: anything else is refused), and moves it into
   ``runs/checkpoints``. ``segbench run CONFIG`` then finds the finished training, loads it
   (its rows say the checkpoint was reused, with the training time the GPU took) and scores the
   test images here, from the original files, with the one evaluator.

Written here, not borrowed: the device tool is this workplace's own, so no library knows its
limits; the pieces are the standard library's (``hashlib``, ``shutil``) and Pillow's WebP.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.config import Config, load_config
from bench.datasets import load_splits
from bench.datasets.root import REPO_ROOT, data_root
from bench.errors import SegbenchError

log = logging.getLogger(__name__)

DEVICE_DIR = REPO_ROOT / "runs" / "device"
#: What one call carries, the checkout included (the device tool's limit).
CALL_LIMIT = 64 * 2**20
#: Kept free under the limit (files that appear between packing and the call).
MARGIN = 2 * 2**20
#: Largest file the device tool brings back is 16 MiB; chunks stay under it.
CHUNK = 15 * 2**20
#: Files the device tool brings back from one call.
MAX_FILES_BACK = 8
#: Non-image files of a dataset root larger than this are not packed (none is needed to train).
MAX_SIDE_FILE = 2**20


def pixel_digest(array: np.ndarray) -> str:
    """SHA-256 of an image's decoded pixels, with its shape and dtype (format-independent)."""
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkout_size(repo: Path = REPO_ROOT) -> int:
    """Bytes of what the device tool sends of the checkout: tracked and untracked-not-ignored."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo, capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SegbenchError(f"{repo}: cannot list the checkout's files with git ({exc})") from exc
    total = 0
    for name in out.decode().split("\0"):
        path = repo / name
        if name and path.is_file():
            total += path.stat().st_size
    return total


def _training_splits(cfg: Config) -> list[Any]:
    """The datasets a training reads: the config's train split and its val split, if any."""
    train, val, _ = load_splits(replace(cfg, split=cfg.train_split))
    return [train] if val is None else [train, val]


def _encode(path: Path) -> tuple[bytes, str, str]:
    """``(stored bytes, how, digest)``: a PNG as lossless WebP when smaller, else the file."""
    raw = path.read_bytes()
    if path.suffix.lower() != ".png":
        return raw, "copy", hashlib.sha256(raw).hexdigest()
    with Image.open(io.BytesIO(raw)) as img:
        img.load()
        if img.mode not in ("RGB", "RGBA"):  # label maps and palettes: PNG is smaller anyway
            return raw, "copy", hashlib.sha256(raw).hexdigest()
        pixels = np.asarray(img)
        buf = io.BytesIO()
        # effort 4 of 6 at half quality: 2 % larger files than the slowest setting, 30x faster
        img.save(buf, "WEBP", lossless=True, quality=50, method=4)
    webp = buf.getvalue()
    with Image.open(io.BytesIO(webp)) as back:
        same = np.array_equal(np.asarray(back.convert(img.mode)), pixels)
    if not same:  # never expected of lossless WebP; the original travels then
        return raw, "copy", hashlib.sha256(raw).hexdigest()
    if len(webp) >= len(raw):
        return raw, "copy", hashlib.sha256(raw).hexdigest()
    return webp, "webp", pixel_digest(pixels)


def pack(
    config: str | Path,
    only: list[str] | None = None,
    out: Path = DEVICE_DIR,
    part_bytes: int | None = None,
) -> dict:
    """Write the training data of ``config`` into parts that travel beside the checkout.

    Parameters
    ----------
    config : str or Path
        The config whose networks will train on the device.
    only : list of str, optional
        Method ids (recorded, for the train step's default).
    out : Path
        Folder of the parts (emptied first).
    part_bytes : int, optional
        Size of a part; default: the call's limit less the checkout and a margin.

    Returns
    -------
    dict
        The pack description written to ``part1/pack.json``.
    """
    cfg = load_config(config)
    root = data_root(cfg.data_root).resolve()
    if part_bytes is None:
        part_bytes = CALL_LIMIT - MARGIN - checkout_size()
        if part_bytes < 4 * 2**20:
            raise SegbenchError(
                f"the checkout leaves {part_bytes / 2**20:.1f} MiB of the device tool's 64 MiB "
                "a call: too little for the data (move large untracked files out of the checkout)"
            )
    elif part_bytes <= 0:
        raise SegbenchError(f"the size of a part must be positive, got {part_bytes} bytes")
    splits = _training_splits(cfg)
    # the checkpoint folders this checkout computes: the device must compute the same ones
    train_ds, val_ds = (splits + [None])[:2]
    expected = {
        f"{method_id} seed {seed}": method.checkpoint_folder(train_ds, val_ds).name
        for method_id, seed, method in _networks(cfg, only, DEVICE_DIR / "checkpoints")
    }
    files: dict[Path, Path] = {}  # absolute path -> path under the data root
    for ds in splits:
        ds_root = Path(ds.root).resolve()
        if not ds_root.is_relative_to(root):
            raise SegbenchError(
                f"{config}: the dataset folder {ds_root} is not under the data root {root}; "
                "packing needs it there (give the folder as a path relative to data_root)"
            )
        for i in range(len(ds)):
            for path in (Path(ds.image_path(i)), Path(ds.label_path(i))):
                files[path.resolve()] = path.resolve().relative_to(root)
        # split lists, dataset.yaml, README, SHA256SUMS: whatever small file the loader reads
        for path in sorted(ds_root.rglob("*")):
            if (path.is_file() and path.stat().st_size <= MAX_SIDE_FILE
                    and path.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp"}):  # fmt: skip
                files.setdefault(path.resolve(), path.resolve().relative_to(root))
    if out.exists():
        shutil.rmtree(out)
    entries, part, used = [], 1, 0
    for path, rel in sorted(files.items(), key=lambda kv: str(kv[1])):
        data, how, digest = _encode(path)
        if len(data) > part_bytes:
            raise SegbenchError(f"{path}: {len(data)} bytes, more than a part ({part_bytes})")
        if used + len(data) > part_bytes:
            part, used = part + 1, 0
        stored = Path(f"part{part}") / (f"{rel}.webp" if how == "webp" else str(rel))
        (out / stored).parent.mkdir(parents=True, exist_ok=True)
        (out / stored).write_bytes(data)
        used += len(data)
        entries.append({"path": str(rel), "stored": str(stored), "how": how, "sha256": digest})
    description = {
        "config": str(config), "config_yaml": cfg.to_yaml(), "only": only or [],
        "parts": part, "part_bytes": part_bytes, "checkpoints": expected, "files": entries,
    }  # fmt: skip
    (out / "part1" / "pack.json").write_text(json.dumps(description, indent=1))
    sizes = [sum(f.stat().st_size for f in (out / f"part{k}").rglob("*") if f.is_file())
             for k in range(1, part + 1)]  # fmt: skip
    log.info("packed %d files of %s into %d part(s) under %s: %s MiB", len(entries), root, part,
             out, ", ".join(f"{s / 2**20:.1f}" for s in sizes))  # fmt: skip
    return description


def unpack(parts: Path, dest: Path) -> dict:
    """Rebuild the data root from ``parts`` (WebP back to PNG), checking every file.

    Raises
    ------
    SegbenchError
        A part missing (naming it), a file missing or not what was packed.
    """
    index = parts / "part1" / "pack.json"
    if not index.is_file():
        raise SegbenchError(f"{index}: not found (carry runs/device/part1 in a call first)")
    description = json.loads(index.read_text())
    missing = [f"part{k}" for k in range(1, description["parts"] + 1)
               if not (parts / f"part{k}").is_dir()]  # fmt: skip
    if missing:
        raise SegbenchError(
            f"{parts}: {', '.join(missing)} missing (each call carries one part; the machine "
            "keeps what earlier calls carried while it stays warm)"
        )
    for entry in description["files"]:
        src, target = parts / entry["stored"], dest / entry["path"]
        if not src.is_file():
            raise SegbenchError(f"{src}: missing from its part")
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry["how"] == "webp":
            with Image.open(src) as img:
                pixels = np.asarray(img)
            if pixel_digest(pixels) != entry["sha256"]:
                raise SegbenchError(f"{src}: its pixels are not those packed")
            Image.fromarray(pixels).save(target, "PNG")
        else:
            shutil.copyfile(src, target)
            if file_digest(target) != entry["sha256"]:
                raise SegbenchError(f"{src}: not the file packed")
    log.info("rebuilt %d files under %s", len(description["files"]), dest)
    return description


def _device_record() -> dict:
    import torch

    record = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    return record


def export(folder: Path, out: Path, device: dict) -> int:
    """Copy a finished checkpoint folder to ``out/<name>`` in chunks; return the files written."""
    meta = json.loads((folder / "meta.json").read_text())
    keep_best = meta.get("train", {}).get("keep") == "best" and (folder / "best.pt").is_file()
    names = ["last.pt", "meta.json"] + (["best.pt"] if keep_best else [])
    target = out / folder.name
    target.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"device": device, "files": {}}
    written = 0
    for name in names:
        data = (folder / name).read_bytes()
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        for k, chunk in enumerate(chunks):
            (target / f"{name}.{k:02d}").write_bytes(chunk)
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(),
                                   "chunks": len(chunks)}  # fmt: skip
        written += len(chunks)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return written + 1


def files_needed(folder: Path) -> int:
    """Files :func:`export` writes for ``folder`` (chunks and the manifest)."""
    meta = json.loads((folder / "meta.json").read_text())
    names = ["last.pt", "meta.json"]
    if meta.get("train", {}).get("keep") == "best" and (folder / "best.pt").is_file():
        names.append("best.pt")
    return 1 + sum(max(1, -(-(folder / n).stat().st_size // CHUNK)) for n in names)


def _networks(cfg: Config, only: list[str] | None, runs_dir: Path) -> list[tuple[str, int, Any]]:
    """``(method id, seed, unfitted method)`` of every network of ``cfg`` (``only``'s ids)."""
    from bench.methods import build_method
    from bench.runner import seeded_params

    out = []
    for spec in cfg.methods:
        if only and spec.id not in only:
            continue
        for seed in cfg.seeds:
            method = build_method(spec.name, seeded_params(spec.name, spec.params, seed, runs_dir))
            if hasattr(method, "checkpoint_folder"):
                out.append((spec.id, seed, method))
    if not out:
        raise SegbenchError(f"{cfg.source}: no network to train (ids: {only or 'all'})")
    return out


def train(
    out: Path,
    config: str | Path | None = None,
    only: list[str] | None = None,
    parts: Path = DEVICE_DIR,
    data_dir: Path | None = None,
    runs_dir: Path | None = None,
) -> list[str]:
    """Rebuild the data, train the networks, export the finished ones to ``out`` (the device).

    Returns the checkpoint folder names exported; those that did not fit in one call's files
    are named in the log, with the command that exports them.
    """
    from bench.runner import RUNS_DIR

    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    data_dir = (
        Path(tempfile.gettempdir()) / "segbench-device-data" if data_dir is None else data_dir
    )
    description = unpack(parts, data_dir)
    cfg = load_config(config or description["config"])
    if cfg.folds:
        raise SegbenchError(f"{cfg.source}: configs with folds are not packed for the device yet")
    cfg.data_root = str(data_dir)
    only = only or description["only"] or None
    train_ds, val_ds = (_training_splits(cfg) + [None])[:2]
    device = _device_record()
    out.mkdir(parents=True, exist_ok=True)
    networks = _networks(cfg, only, runs_dir)
    for method_id, seed, method in networks:  # checked before the first (long) fit
        name = method.checkpoint_folder(train_ds, val_ds).name
        packed = description.get("checkpoints", {}).get(f"{method_id} seed {seed}")
        if packed is not None and packed != name:
            raise SegbenchError(
                f"{method_id} seed {seed}: this machine computes checkpoint {name}, the packing "
                f"machine {packed}: the code, the parameters or the data differ (run the same "
                "commit on both; what receive would refuse is not trained)"
            )
    exported, budget, left = [], MAX_FILES_BACK, []
    for method_id, seed, method in networks:
        log.info("%s seed %d: training on the device", method_id, seed)
        method.fit(train_ds, val_dataset=val_ds)
        folder = Path(method.checkpoint_dir_)
        need = files_needed(folder)
        if need <= budget:
            budget -= export(folder, out, device)
            exported.append(folder.name)
        else:
            left.append(method_id)
    if left:
        log.warning("not brought back in this call (files limit): %s; rerun with --only %s "
                    "(the finished trainings are reused, only exported)",
                    ", ".join(left), " ".join(left))  # fmt: skip
    return exported


def receive(
    files_at: Path,
    config: str | Path,
    only: list[str] | None = None,
    runs_dir: Path | None = None,
    force: bool = False,
) -> list[Path]:
    """Check the device's checkpoint folders and put them where the runner finds them.

    Raises
    ------
    SegbenchError
        A chunk missing or corrupt, or a folder whose name is not a checkpoint key this
        checkout computes for ``config`` (other parameters, data or code).
    """
    from bench.runner import RUNS_DIR

    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    cfg = load_config(config)
    train_ds, val_ds = (_training_splits(cfg) + [None])[:2]
    expected = {
        method.checkpoint_folder(train_ds, val_ds).name: (method_id, seed)
        for method_id, seed, method in _networks(cfg, only, runs_dir)
    }
    placed = []
    manifests = sorted(Path(files_at).glob("*/manifest.json"))
    if not manifests:
        raise SegbenchError(f"{files_at}: no checkpoint folder (no */manifest.json)")
    for manifest_path in manifests:
        folder = manifest_path.parent
        if folder.name not in expected:
            raise SegbenchError(
                f"{folder}: not a checkpoint this checkout trains for {config} (other "
                "parameters, data or code); the device must run the same commit"
            )
        manifest = json.loads(manifest_path.read_text())
        target = runs_dir / "checkpoints" / folder.name
        if (target / "meta.json").is_file() and not force:
            raise SegbenchError(f"{target}: exists already (--force replaces it)")
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, info in manifest["files"].items():
            chunks = [folder / f"{name}.{k:02d}" for k in range(info["chunks"])]
            missing = [c.name for c in chunks if not c.is_file()]
            if missing:
                shutil.rmtree(tmp)
                raise SegbenchError(f"{folder}: chunk(s) {', '.join(missing)} missing")
            data = b"".join(c.read_bytes() for c in chunks)
            if hashlib.sha256(data).hexdigest() != info["sha256"]:
                shutil.rmtree(tmp)
                raise SegbenchError(f"{folder}/{name}: the chunks do not add up to the file sent")
            (tmp / name).write_bytes(data)
        (tmp / "device.json").write_text(json.dumps(manifest["device"], indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        method_id, seed = expected[folder.name]
        log.info("%s seed %d: %s (trained on %s)", method_id, seed, target,
                 manifest["device"].get("gpu", "the CPU"))  # fmt: skip
        placed.append(target)
    return placed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deep.device", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: the config's training data, in parts")
    p.add_argument("config")
    p.add_argument("--only", nargs="+", metavar="ID")
    p.add_argument("--out", type=Path, default=DEVICE_DIR)
    p.add_argument("--part-mib", type=float, help="size of a part (default: what fits a call)")
    t = sub.add_parser("train", help="there: rebuild the data, train, write $OUT")
    t.add_argument("--out", type=Path, required=True, help="the device tool's $OUT")
    t.add_argument("--config", help="default: the packed config")
    t.add_argument("--only", nargs="+", metavar="ID")
    t.add_argument("--parts", type=Path, default=DEVICE_DIR)
    t.add_argument("--data-dir", type=Path)
    r = sub.add_parser("receive", help="here: check and place what the device sent")
    r.add_argument("files_at", type=Path)
    r.add_argument("config")
    r.add_argument("--only", nargs="+", metavar="ID")
    r.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "pack":
            part = None if args.part_mib is None else int(args.part_mib * 2**20)
            pack(args.config, args.only, args.out, part)
        elif args.command == "train":
            train(args.out, args.config, args.only, args.parts, args.data_dir)
        else:
            receive(args.files_at, args.config, args.only, force=args.force)
    except SegbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
