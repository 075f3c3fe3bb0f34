"""Datasets: CamVid (real), a seeded synthetic one (tests), and the verified download.

``DATASETS`` maps a config name to its class; :func:`load_dataset` builds a split from the
``dataset`` section of a config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.datasets.base import SegmentationDataset
from bench.datasets.camvid import CamVid
from bench.datasets.root import data_root
from bench.datasets.synthetic import Synthetic
from bench.errors import SegbenchError

if TYPE_CHECKING:
    from bench.config import Config

DATASETS: dict[str, type[SegmentationDataset]] = {"camvid": CamVid, "synthetic": Synthetic}

__all__ = [
    "DATASETS", "CamVid", "SegmentationDataset", "Synthetic", "data_root", "load_dataset",
    "load_splits",
]  # fmt: skip


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


def load_splits(
    cfg: Config,
) -> tuple[SegmentationDataset, SegmentationDataset | None, SegmentationDataset]:
    """The (train, val or None, scored) splits a configuration asks for.

    The one place that turns a config's dataset keys into datasets, so that the runner and
    anything that must match its data (e.g. a study reading checkpoints) agree.
    """

    def make(split: str, subset: int | None) -> SegmentationDataset:
        options = dict(cfg.dataset_options)
        if cfg.dataset == "camvid":
            options.update(root=cfg.data_root, subset=subset)
        elif subset is not None:
            options["n_images"] = subset
        return load_dataset(cfg.dataset, split, resolution=cfg.resolution, **options)

    train = make(cfg.train_split, cfg.train_subset)
    val = make(cfg.val_split, cfg.eval_subset) if cfg.val_split else None
    test = make(cfg.split, cfg.eval_subset)
    return train, val, test
