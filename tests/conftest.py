"""Shared fixtures: small slices of the real CamVid and Stanford Background copies, and
synthetic data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bench.datasets.root import data_root


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The data root holding the real CamVid (the shared copy in CI)."""
    root = data_root()
    if not (root / "camvid" / "test.txt").is_file():
        pytest.fail(f"CamVid not found under {root}: set SEGBENCH_DATA or place ../shared beside")
    return root


@pytest.fixture(scope="session")
def stanford_root() -> Path:
    """The data root holding the real Stanford Background (the shared copy in CI)."""
    root = data_root()
    if not (root / "stanford_background" / "splits" / "fold0_test.txt").is_file():
        pytest.fail(
            f"Stanford Background not found under {root}: set SEGBENCH_DATA or place ../shared "
            "beside"
        )
    return root


@pytest.fixture()
def camvid_copy(tmp_path: Path, camvid_root: Path) -> Path:
    """A writable data root with a 3-image CamVid test split copied from the real one.

    Tests corrupt files of this copy, never the shared one.
    """
    src = camvid_root / "camvid"
    dst = tmp_path / "data" / "camvid"
    lines = (src / "test.txt").read_text().splitlines()[:3]
    for folder in ("test", "testannot"):
        (dst / folder).mkdir(parents=True)
    for line in lines:
        for part in line.split():
            rel = part.removeprefix("/SegNet/CamVid/")
            shutil.copy(src / rel, dst / rel)
    (dst / "test.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "data"


@pytest.fixture()
def one_torch_thread():
    """One torch thread: on a shared 2-core machine two threads oversubscribe and crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
