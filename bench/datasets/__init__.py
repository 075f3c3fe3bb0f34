"""Datasets: CamVid and Stanford Background (real), any user folder of images and index labels
(``folder``), a seeded synthetic one (tests), and the verified download.

``DATASETS`` maps a config name to its class; :func:`load_dataset` builds a split from the
``dataset`` section of a config.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from bench.datasets.base import SegmentationDataset
from bench.datasets.camvid import CamVid
from bench.datasets.folder import FolderDataset
from bench.datasets.root import data_root
from bench.datasets.stanford_background import StanfordBackground
from bench.datasets.synthetic import Synthetic
from bench.errors import SegbenchError

if TYPE_CHECKING:
    from bench.config import Config

DATASETS: dict[str, type[SegmentationDataset]] = {
    "camvid": CamVid,
    "folder": FolderDataset,
    "stanford_background": StanfordBackground,
    "synthetic": Synthetic,
}

__all__ = [
    "DATASETS", "CamVid", "FolderDataset", "SegmentationDataset", "StanfordBackground",
    "Synthetic", "data_root", "dataset_class", "load_dataset", "load_splits",
]  # fmt: skip


def dataset_class(name: str) -> type[SegmentationDataset]:
    """The class registered as ``name`` in :data:`DATASETS`.

    Raises
    ------
    SegbenchError
        For an unknown dataset name.
    """
    if name not in DATASETS:
        raise SegbenchError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(name: str, split: str, **options: Any) -> SegmentationDataset:
    """Build split ``split`` of dataset ``name`` with the given constructor options.

    Every dataset takes ``root``, ``resolution`` and ``subset`` (see
    :class:`~bench.datasets.base.SegmentationDataset`), so callers pass them whatever the name.

    Raises
    ------
    SegbenchError
        For an unknown dataset name or option.
    """
    cls = dataset_class(name)
    try:
        return cls(split=split, **options)
    except TypeError as exc:
        raise SegbenchError(f"dataset {name!r}: {exc}") from exc


def load_splits(
    cfg: Config, fold: int | None = None
) -> tuple[SegmentationDataset, SegmentationDataset | None, SegmentationDataset]:
    """The (train, val or None, scored) splits a configuration asks for (of ``fold``).

    The one place that turns a config's dataset keys into datasets, so that the runner and
    anything that must match its data (e.g. a study reading checkpoints) agree.

    Raises
    ------
    SegbenchError
        When ``fold`` is given and the dataset has no folds.
    """
    if fold is not None and "fold" not in inspect.signature(dataset_class(cfg.dataset)).parameters:
        raise SegbenchError(
            f"{cfg.source}: 'folds' given, but dataset {cfg.dataset!r} has no folds "
            "(its class takes no 'fold' option)"
        )
    extra = {} if fold is None else {"fold": fold}

    def make(split: str, subset: int | None) -> SegmentationDataset:
        options = {**cfg.dataset_options, **extra, "root": cfg.data_root, "subset": subset}
        return load_dataset(cfg.dataset, split, resolution=cfg.resolution, **options)

    train = make(cfg.train_split, cfg.train_subset)
    val = make(cfg.val_split, cfg.eval_subset) if cfg.val_split else None
    test = make(cfg.split, cfg.eval_subset)
    return train, val, test
