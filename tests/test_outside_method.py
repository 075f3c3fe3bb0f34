"""Methods from outside the project: ``name: package.module:Class`` in a config."""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from baselines.class_prior import ClassPrior
from bench.config import parse_config
from bench.contract import check_method, synthetic_datasets
from bench.errors import SegbenchError
from bench.methods import build_method, method_class, method_module
from bench.provenance import code_files, method_code_hash

MAJORITY = '''
    """A user's method: the most frequent training class everywhere, with some confidence."""

    import numpy as np

    from bench.method import SegmentationMethod


    class Majority(SegmentationMethod):
        def __init__(self, confidence=0.9):
            self.confidence = confidence

        def fit(self, dataset, val_dataset=None):
            counts = np.zeros(dataset.n_classes)
            for _, label, _ in dataset:
                counts += np.bincount(label.ravel(), minlength=256)[: dataset.n_classes]
            self.n_classes_ = dataset.n_classes
            self.majority_ = int(np.argmax(counts))
            return self

        def predict_proba(self, image):
            h, w = image.shape[:2]
            rest = (1.0 - self.confidence) / (self.n_classes_ - 1)
            proba = np.full((h, w, self.n_classes_), rest, np.float32)
            proba[..., self.majority_] = self.confidence
            return proba
'''

# scikit-learn's estimator API by hand, without deriving from BaseEstimator
PLAIN = """
    import numpy as np


    class Plain:
        def __init__(self, cls=0, *, n_classes=4):
            self.cls = cls
            self.n_classes = n_classes

        def get_params(self, deep=True):
            return {"cls": self.cls, "n_classes": self.n_classes}

        def set_params(self, **params):
            for key, value in params.items():
                setattr(self, key, value)
            return self

        def fit(self, dataset, val_dataset=None):
            self.fitted_ = True
            return self

        def predict_proba(self, image):
            proba = np.zeros((*image.shape[:2], self.n_classes), np.float32)
            proba[..., self.cls] = 1.0
            return proba

        def predict(self, image):
            return np.argmax(self.predict_proba(image), axis=-1).astype(np.uint8)
"""


def write_package(where: Path, package: str, modules: dict[str, str]) -> None:
    (where / package).mkdir(parents=True)
    (where / package / "__init__.py").write_text("")
    for name, source in modules.items():
        (where / package / f"{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()  # the import system caches directory listings


@pytest.fixture()
def user_package(tmp_path, monkeypatch):
    """``mymethods`` written into tmp_path, which is put on sys.path (both undone after)."""
    write_package(
        tmp_path,
        "mymethods",
        {
            "majority": MAJORITY,
            "plain": PLAIN,
            "broken": "raise RuntimeError('boom at import')\n",
            "needs_dep": "import nosuchdep_xyz  # noqa: F401\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "mymethods" or m.startswith("mymethods.")]:
        del sys.modules[name]


def test_build_method_from_an_import_path(user_package) -> None:
    method = build_method("mymethods.majority:Majority", {"confidence": 0.8})
    assert type(method).__name__ == "Majority" and method.get_params() == {"confidence": 0.8}
    train, _ = synthetic_datasets()
    method.fit(train)
    # the training split's most frequent class, counted here independently
    counts = sum(np.bincount(label.ravel(), minlength=256)[:4] for _, label, _ in train)
    image = train.image(0)
    assert (method.predict(image) == counts.argmax()).all()
    expected = [0.8 if c == counts.argmax() else 0.2 / 3 for c in range(4)]
    assert method.predict_proba(image)[0, 0].tolist() == pytest.approx(expected)
    with pytest.raises(SegbenchError, match="'mymethods.majority:Majority' has no parameter 'k'"):
        build_method("mymethods.majority:Majority", {"k": 1})


def test_a_scikit_learn_style_class_without_base_estimator(user_package) -> None:
    method = build_method("mymethods.plain:Plain", {"cls": 2})
    assert method.get_params() == {"cls": 2, "n_classes": 4}
    with pytest.raises(SegbenchError, match="its parameters: cls, n_classes"):
        build_method("mymethods.plain:Plain", {"classes": 2})
    check_method(method)


def test_the_contract_suite_passes_on_a_user_class(user_package) -> None:
    check_method(build_method("mymethods.majority:Majority", {"confidence": 0.7}))


def test_registered_names_and_module_of_either_form(user_package) -> None:
    assert method_class("class_prior") is ClassPrior
    # a project class by its import path is the same class
    assert method_class("baselines.class_prior:ClassPrior") is ClassPrior
    assert method_module("class_prior") == "baselines.class_prior"
    assert method_module("mymethods.majority:Majority") == "mymethods.majority"
    assert "mymethods.majority" not in sys.modules  # method_module imports nothing


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("nosuch.mod:X", r"cannot import module 'nosuch.mod' \(ModuleNotFoundError: .*'nosuch'"),
        ("bench.methods:NOPE", "'bench.methods' has no attribute 'NOPE'"),
        ("json:JSONDecoder.nope", "'json.JSONDecoder' has no attribute 'nope'"),
        ("json:JSONDecoder", "json.JSONDecoder is not a segmentation method "
         r"\(lacks fit, predict_proba, get_params\)"),
        ("json:dumps", r"json.dumps is not a segmentation method \(is not a class\)"),
        ("a:b:c", "neither a registered name .* nor an import path 'package.module:Class'"),
        (":X", "neither a registered name"),
        ("mymethods.majority:", "neither a registered name"),
        ("nope", "unknown method 'nope': neither a registered name"),
        ("mymethods.broken:X", r"cannot import .*RuntimeError: boom at import"),
        ("mymethods.needs_dep:X", "cannot import .*No module named 'nosuchdep_xyz'"),
    ],
)  # fmt: skip
def test_a_bad_method_string_is_one_message_naming_it(user_package, name, why) -> None:
    with pytest.raises(SegbenchError) as info:
        build_method(name)
    message = str(info.value)
    assert f"{name!r}" in message and "\n" not in message
    assert re.search(why, message), message


def test_a_package_in_the_working_directory_imports(tmp_path, monkeypatch) -> None:
    # As under the ``segbench`` console script: the working directory is not on sys.path.
    write_package(tmp_path, "cwdmethods", {"majority": MAJORITY})
    monkeypatch.chdir(tmp_path)
    cwd = os.getcwd()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", cwd)])
    try:
        assert method_class("cwdmethods.majority:Majority").__name__ == "Majority"
        assert sys.path[-1] == cwd  # appended: it shadows no installed module
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "cwdmethods"]:
            del sys.modules[name]


def test_run_config_runs_an_outside_method(user_package, tmp_path, caplog) -> None:
    from bench.runner import run_config

    cfg = parse_config(
        {
            "name": "outside",
            "dataset": "synthetic",
            "dataset_options": {"size": [32, 40], "n_images": 3},
            "val_split": None,
            "bootstrap": 10,
            "methods": [{"name": "mymethods.majority:Majority", "id": "majority"}],
        }
    )
    (row,) = run_config(cfg, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    assert row["status"] == "ok" and row["method_name"] == "mymethods.majority:Majority"
    assert row["provenance"]["code_hash"] == method_code_hash("mymethods.majority")
    # the user's module is part of the fingerprint: an edit recomputes, no edit reuses
    with caplog.at_level(logging.INFO, logger="bench.runner"):
        run_config(cfg, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    assert "same fingerprint" in caplog.text, caplog.text
    source = user_package / "mymethods" / "majority.py"
    source.write_text(source.read_text().replace("confidence=0.9", "confidence=0.8"))
    # a new process would have neither the hash nor the module cached
    code_files.cache_clear()
    del sys.modules["mymethods.majority"]
    (again,) = run_config(cfg, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    assert again["provenance"]["code_hash"] != row["provenance"]["code_hash"]
    assert again["all_params"] == {"confidence": 0.8}
