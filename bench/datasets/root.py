"""Where datasets live: one folder per dataset under a configurable root."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The read-only copy beside a checkout (development machines and CI).
SHARED_ROOT = REPO_ROOT.parent / "shared" / "datasets"
#: Where ``segbench data download`` puts data when there is no shared copy (git-ignored).
LOCAL_ROOT = REPO_ROOT / "data"


def data_root(configured: str | Path | None = None) -> Path:
    """The folder that holds one sub-folder per dataset.

    Resolution order: an explicit ``configured`` value (the config key ``data_root`` or the
    ``--data-root`` option), then the environment variable ``SEGBENCH_DATA``, then the shared copy
    ``../shared/datasets`` beside the checkout where it exists, then ``./data``.
    """
    if configured:
        return Path(configured).expanduser().resolve()
    env = os.environ.get("SEGBENCH_DATA")
    if env:
        return Path(env).expanduser().resolve()
    if SHARED_ROOT.is_dir():
        return SHARED_ROOT
    return LOCAL_ROOT
