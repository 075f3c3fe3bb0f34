"""Config name -> method class: the only place the harness learns that a method exists.

Values are ``"module:Class"`` strings, imported when a config asks for the method. That keeps
``segbench evaluate`` and ``segbench report`` from importing torch or pydensecrf, and lets a
method whose optional dependency is broken fail alone (recorded as failed) instead of taking the
whole harness down.
"""

from __future__ import annotations

import importlib

from bench.errors import SegbenchError

METHODS: dict[str, str] = {
    "class_prior": "baselines.class_prior:ClassPrior",
    "colour_forest": "baselines.colour_forest:ColourForest",
    "texton_forest": "baselines.texton_forest:TextonForest",
    "superpixel": "baselines.superpixels:SuperpixelClassifier",
    "dense_crf": "baselines.dense_crf:DenseCRF",
    "sliding_window": "baselines.sliding_window:SlidingWindowCNN",
    "patch_fcn": "deep.patch_fcn:PatchFCN",
    "fcn": "deep.fcn:FCN",
}


def method_class(name: str) -> type:
    """The class registered under ``name``.

    Raises
    ------
    SegbenchError
        If no method has that name.
    """
    if name not in METHODS:
        raise SegbenchError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_method(name: str, params: dict | None = None):  # noqa: ANN201
    """An instance of method ``name`` with constructor parameters ``params``.

    Raises
    ------
    SegbenchError
        If the name is unknown or a parameter is not one the method takes.
    """
    cls = method_class(name)
    params = dict(params or {})
    known = set(cls._get_param_names())  # scikit-learn reads them off __init__'s signature
    unknown = sorted(set(params) - known)
    if unknown:
        raise SegbenchError(
            f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(sorted(known)) or '(none)'}"
        )
    return cls(**params)
