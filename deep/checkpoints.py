"""Where training checkpoints live, how they are keyed, written and read (every network's).

A checkpoint folder is ``<root>/<kind>-<key>``: ``root`` comes from the caller (the runner
passes ``runs/checkpoints``; a method used on its own trains in a temporary folder), ``kind``
names the network family, and ``key`` hashes everything that decides the weights: the training
parameters, the data, the source of the code that trains (:func:`bench.provenance.code_hash`)
and the pinned versions of the packages that code imports (torch above all:
:func:`bench.provenance.dependency_pins`), so a checkpoint of other parameters, data, code or
packages is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from bench.provenance import code_hash, dependency_pins


def checkpoint_folder(root: str | Path, kind: str, key: dict, code_module: str) -> Path:
    """``root/<kind>-<16 hex digits>``, the digits hashing ``key`` and ``code_module``'s code.

    Parameters
    ----------
    root : str or Path
        The checkpoint cache.
    kind : str
        Network family (``"fcn"``, ``"patch_net"``): part of the folder name, for people.
    key : dict
        JSON-able description of what decides the weights (parameters, data).
    code_module : str
        The module that trains; its source and the project modules it imports are hashed in,
        with the lock-file pins of what they import.
    """
    full = {
        "kind": kind, **key, "code": code_hash(code_module),
        "pins": dependency_pins(code_module),
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()
    return Path(root) / f"{kind}-{digest[:16]}"


@contextmanager
def checkpoint_root(root: str | Path | None) -> Iterator[Path]:
    """``root``, or a temporary folder removed afterwards when ``root`` is None."""
    if root is not None:
        yield Path(root)
        return
    with tempfile.TemporaryDirectory(prefix="segbench-checkpoints-") as tmp:
        yield Path(tmp)


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous file intact.

    The temporary name carries the process id, so two processes never write the same one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint safely (tensors and plain values only: ``weights_only=True``)."""
    return torch.load(path, map_location=device, weights_only=True)
