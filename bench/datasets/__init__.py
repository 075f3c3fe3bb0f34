"""Datasets: CamVid (real), a seeded synthetic one (tests), and the verified download.

``DATASETS`` maps a config name to its class; :func:`load_dataset` builds a split from the
``dataset`` section of a config.
"""

from __future__ import annotations

from typing import Any

from bench.datasets.base import SegmentationDataset
from bench.datasets.camvid import CamVid
from bench.datasets.root import data_root
from bench.datasets.synthetic import Synthetic
from bench.errors import SegbenchError

DATASETS: dict[str, type[SegmentationDataset]] = {"camvid": CamVid, "synthetic": Synthetic}

__all__ = ["DATASETS", "CamVid", "SegmentationDataset", "Synthetic", "data_root", "load_dataset"]


def load_dataset(name: str, split: str, **options: Any) -> SegmentationDataset:
    """Build split ``split`` of dataset ``name`` with the given constructor options.

    Raises
    ------
    SegbenchError
        For an unknown dataset name or option.
    """
    if name not in DATASETS:
        raise SegbenchError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    cls = DATASETS[name]
    try:
        return cls(split=split, **options)
    except TypeError as exc:
        raise SegbenchError(f"dataset {name!r}: {exc}") from exc
