"""Benchmark configurations: plain YAML, validated, with errors that name the file and key.

A configuration (see ``configs/``) says what runs::

    profile: quick            # quick | full | device: which kind of run made the rows
    seed: 0                   # the seed of every random draw of every method (random_state)
    seeds: [0, 1, 2]          # or several: one row per method and seed (overrides ``seed``)
    dataset: camvid           # a name from bench.datasets.DATASETS
    data_root: null           # default: $SEGBENCH_DATA, else ../shared/datasets, else ./data
    split: test               # the split that is scored
    train_split: train
    val_split: val            # handed to fit() for model selection only; null for none
    resolution: [180, 240]    # working (H, W) of the methods; null = native. Scored at native.
    train_subset: null        # N = N images evenly spread over the training split
    eval_subset: null
    dataset_options: {}       # extra constructor arguments of the dataset class
    methods:
      - name: colour_forest   # a name from bench.methods.METHODS
        id: colour_forest     # optional row name (default: name); unique within the config
        params: {n_estimators: 30}
        crf: {}               # optional: also score it refined by the dense CRF stage
                              # (params of baselines.dense_crf.DenseCRF), as row "<id>+crf"
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import SegbenchError

#: Profiles from lightest to heaviest. A row's profile is part of where it is stored, so a
#: lighter run can never overwrite a heavier one's rows.
PROFILES = ("quick", "full", "device")

_TOP_KEYS = {
    "name", "description", "profile", "seed", "dataset", "data_root", "split", "train_split",
    "val_split", "resolution", "train_subset", "eval_subset", "dataset_options", "methods",
    "bootstrap", "sample_images", "seeds", "folds",
}  # fmt: skip
_METHOD_KEYS = {"name", "id", "params", "crf"}
#: Keys whose value is text (a YAML ``split: 1`` or ``dataset: yes`` is a mistake, not a name).
_STRING_KEYS: dict[str, type | tuple[type, ...]] = {
    "description": str, "dataset": str, "data_root": (str, type(None)), "split": str,
    "train_split": str, "val_split": (str, type(None)),
}  # fmt: skip
#: A config name or method id: each becomes a file or folder name of the results store.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: A method id may also hold '+' (a pipeline, ``superpixel_slic+gc``, as the CRF rows' ids do);
#: it is a file name inside the group, never a path.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass
class MethodSpec:
    name: str
    id: str
    params: dict[str, Any] = field(default_factory=dict)
    #: Parameters of the dense-CRF stage added after this method (None: no CRF row).
    crf: dict[str, Any] | None = None

    @property
    def crf_id(self) -> str:
        return f"{self.id}+crf"


@dataclass
class Config:
    name: str
    profile: str
    methods: list[MethodSpec]
    dataset: str = "camvid"
    seed: int = 0
    #: One row per method and seed; ``[seed]`` unless the config lists ``seeds``.
    seeds: list[int] = field(default_factory=lambda: [0])
    #: Cross-validation folds (the dataset's ``fold`` option): one row per fold, method and
    #: seed. None: the dataset as ``dataset_options`` gives it, rows without a fold.
    folds: list[int] | None = None
    description: str = ""
    data_root: str | None = None
    split: str = "test"
    train_split: str = "train"
    val_split: str | None = "val"
    resolution: list[int] | None = None
    train_subset: int | None = None
    eval_subset: int | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    bootstrap: int = 1000
    sample_images: int = 4
    source: str = ""

    def identity(self) -> dict[str, Any]:
        """The config keys that decide every row (not its name, description or data root)."""
        return {
            "dataset": self.dataset,
            "dataset_options": self.dataset_options,
            "split": self.split,
            "train_split": self.train_split,
            "val_split": self.val_split,
            "resolution": self.resolution,
            "train_subset": self.train_subset,
            "eval_subset": self.eval_subset,
            "bootstrap": self.bootstrap,
            "folds": self.folds,
        }

    def to_yaml(self) -> str:
        data = asdict(self)
        data.pop("source")
        return yaml.safe_dump(data, sort_keys=False)


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file.

    Raises
    ------
    SegbenchError
        If the file is missing or not YAML, a key is unknown, a value has the wrong type, or a
        method id repeats. Method names and parameters are checked by the runner (they need the
        method classes).
    """
    path = Path(path)
    if path.is_dir():
        raise SegbenchError(f"{path}: a folder, not a config file")
    if not path.is_file():
        raise SegbenchError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SegbenchError(f"{path}: cannot read it as UTF-8 text ({exc})") from exc
    except yaml.YAMLError as exc:
        # PyYAML's text spans several lines (the file, the caret marks): one line here
        raise SegbenchError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise SegbenchError(f"{path}: a config must be a mapping of keys to values")
    return parse_config(data, source=str(path), default_name=path.stem)


def parse_config(data: dict, source: str = "<config>", default_name: str = "config") -> Config:
    """Validate a configuration given as a dict (see :func:`load_config`)."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise SegbenchError(
            f"{source}: unknown config key {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(_TOP_KEYS))}"
        )
    profile = data.get("profile", "quick")
    if profile not in PROFILES:
        raise SegbenchError(
            f"{source}: profile must be one of {', '.join(PROFILES)}, not {profile!r}"
        )
    methods_raw = data.get("methods")
    if not isinstance(methods_raw, list) or not methods_raw:
        raise SegbenchError(f"{source}: 'methods' must be a non-empty list")
    methods = []
    for i, entry in enumerate(methods_raw):
        where = f"{source}: methods[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise SegbenchError(f"{where}: each method needs a 'name'")
        bad = sorted(set(entry) - _METHOD_KEYS)
        if bad:
            raise SegbenchError(
                f"{where}: unknown key {', '.join(map(repr, bad))}; known: crf, id, name, params"
            )
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise SegbenchError(f"{where}: 'params' must be a mapping")
        crf = entry.get("crf")
        if crf is True:
            crf = {}
        if crf is not None and not isinstance(crf, dict):
            raise SegbenchError(f"{where}: 'crf' must be a mapping of DenseCRF parameters or true")
        name = entry["name"]
        if not isinstance(name, str) or not name:
            raise SegbenchError(f"{where}: 'name' must be a method name or 'module:Class'")
        # A method from outside the project (``package.module:Class``) is stored as its class
        # name unless it has an id: a row id becomes a file name.
        row_id = entry.get("id", name.rpartition(":")[2].rpartition(".")[2])
        if not isinstance(row_id, str) or not _ID.fullmatch(row_id):
            raise SegbenchError(
                f"{where}: 'id' must be a plain name (letters, digits, '_', '-', '.', '+'), "
                f"not {row_id!r}"
            )
        spec = MethodSpec(name, row_id, params, crf)
        methods.append(spec)
    ids = [m.id for m in methods] + [m.crf_id for m in methods if m.crf is not None]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise SegbenchError(f"{source}: method ids repeat: {', '.join(dupes)} (give each an 'id')")

    resolution = data.get("resolution")
    if resolution is not None and (
        not isinstance(resolution, list)
        or len(resolution) != 2
        or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in resolution)
    ):
        raise SegbenchError(f"{source}: 'resolution' must be [height, width] or null")
    for key in ("seed", "bootstrap", "sample_images"):
        # bool is an int in Python: `seed: true` is a typo, not seed 1
        if key in data and (not isinstance(data[key], int) or isinstance(data[key], bool)):
            raise SegbenchError(f"{source}: {key!r} must be an integer")
    seeds = data.get("seeds", [data.get("seed", 0)])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise SegbenchError(
            f"{source}: 'seeds' must be a non-empty list of non-negative integers, got {seeds!r}"
        )
    if len(set(seeds)) != len(seeds):
        raise SegbenchError(f"{source}: 'seeds' repeats a seed: {seeds!r}")
    folds = data.get("folds")
    if folds is not None and (
        not isinstance(folds, list)
        or not folds
        or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in folds)
        or len(set(folds)) != len(folds)
    ):
        raise SegbenchError(
            f"{source}: 'folds' must be a non-empty list of distinct non-negative integers, "
            f"got {folds!r}"
        )
    for i, spec in enumerate(methods):
        if "random_state" in spec.params or (spec.crf and "random_state" in spec.crf):
            raise SegbenchError(
                f"{source}: methods[{i}] ({spec.id}) sets random_state; the config's "
                "'seed'/'seeds' reach every method's random_state, set them instead"
            )
    for key, types in _STRING_KEYS.items():
        if key in data and not isinstance(data[key], types):
            allowed = "a string" if types is str else "a string or null"
            raise SegbenchError(f"{source}: {key!r} must be {allowed}, not {data[key]!r}")
    # 0 is refused too: it would fail after the first fit (no resample to take an interval
    # from, no image to show), and every row needs both.
    for key, what in (("bootstrap", "resamples of the test-set interval"),
                      ("sample_images", "example predictions the report shows")):  # fmt: skip
        if data.get(key, 1) < 1:
            raise SegbenchError(f"{source}: {key!r} must be at least 1 ({what})")
    for key in ("train_subset", "eval_subset"):
        value = data.get(key)
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if value is not None and (not is_int or value <= 0):
            raise SegbenchError(f"{source}: {key!r} must be a positive integer or null")
    options = data.get("dataset_options") or {}
    if not isinstance(options, dict):
        raise SegbenchError(f"{source}: 'dataset_options' must be a mapping")
    if folds is not None and "fold" in options:
        raise SegbenchError(
            f"{source}: give either 'folds' (one row per fold) or dataset_options.fold, not both"
        )

    name = data.get("name", default_name)
    # A name becomes a folder of the results store: a plain name, never a path.
    if not isinstance(name, str) or not _PLAIN.fullmatch(name):
        raise SegbenchError(
            f"{source}: 'name' must be a plain name (letters, digits, '_', '-', '.'), not {name!r}"
        )
    skip = {"methods", "name", "dataset_options", "profile", "seeds", "seed", "folds"}
    kwargs = {k: data[k] for k in _TOP_KEYS - skip if k in data}
    return Config(
        name=name,
        profile=profile,
        methods=methods,
        seeds=list(seeds),
        seed=seeds[0],
        folds=None if folds is None else list(folds),
        dataset_options=options,
        source=source,
        **kwargs,
    )
