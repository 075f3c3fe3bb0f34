"""Config name -> method class: the only place the harness learns that a method exists.

Values are ``"module:Class"`` strings, imported when a config asks for the method. That keeps
``segbench evaluate`` and ``segbench report`` from importing torch or pydensecrf, and lets a
method whose optional dependency is broken fail alone (recorded as failed) instead of taking the
whole harness down.

A config may also name a method from outside the project by its import path,
``name: package.module:Class``: a class of the user's that follows the interface of
:mod:`bench.method` (deriving from :class:`~bench.method.SegmentationMethod` is the easy way).
The module is imported from ``sys.path`` (installed packages, ``PYTHONPATH``), then from the
current directory. :func:`method_class`, :func:`build_method` and :func:`method_module` take
either form.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

from bench.errors import SegbenchError

METHODS: dict[str, str] = {
    "class_prior": "baselines.class_prior:ClassPrior",
    "colour_forest": "baselines.colour_forest:ColourForest",
    "texton_forest": "baselines.texton_forest:TextonForest",
    "superpixel": "baselines.superpixels:SuperpixelClassifier",
    "superpixel_graph_cut": "baselines.graph_cut:SuperpixelGraphCut",
    "superpixel_relative_location": "baselines.relative_location:SuperpixelRelativeLocation",
    "dense_crf": "baselines.dense_crf:DenseCRF",
    "sliding_window": "baselines.sliding_window:SlidingWindowCNN",
    "patch_fcn": "deep.patch_fcn:PatchFCN",
    "fcn": "deep.fcn:FCN",
}

#: What the runner calls on a method: a class without them cannot be run.
REQUIRED_METHODS = ("fit", "predict_proba", "get_params")
# ``package.module:Class``: dotted identifiers on both sides of exactly one colon (the
# attribute may be nested, ``module:Outer.Inner``, as in a packaging entry point).
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_PATH = re.compile(rf"({_DOTTED}):({_DOTTED})")


def _split(name: str) -> tuple[str, str]:
    """(module, attribute) of a registered name or an import path.

    Raises
    ------
    SegbenchError
        For an unknown name that is not a well-formed import path.
    """
    if name in METHODS:
        module, attr = METHODS[name].split(":")
        return module, attr
    match = _IMPORT_PATH.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise SegbenchError(
            f"unknown method {name!r}: neither a registered name ({', '.join(sorted(METHODS))}) "
            "nor an import path 'package.module:Class'"
        )
    return match.group(1), match.group(2)


def method_module(name: str) -> str:
    """The module that defines method ``name`` (registered name or import path), not imported.

    What the runner hashes into a row's fingerprint and provenance
    (:func:`bench.provenance.method_code_hash`).

    Raises
    ------
    SegbenchError
        For an unknown name that is not a well-formed import path.
    """
    return _split(name)[0]


def _import(module: str) -> object:
    """Import a user's method module: from ``sys.path``, then the current directory."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # ``segbench`` run as a console script does not have the working directory on
        # sys.path (``python -m bench`` does); a user's package beside their config should
        # import either way. Appended, so it never shadows an installed module.
        cwd = os.getcwd()
        top = module.partition(".")[0]
        beside = os.path.isdir(os.path.join(cwd, top)) or os.path.isfile(
            os.path.join(cwd, f"{top}.py")
        )
        # Only when the module itself (not something it imports) is what was not found.
        if exc.name != top or not beside or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        importlib.invalidate_caches()
        return importlib.import_module(module)


def method_class(name: str) -> type:
    """The class of method ``name``: a registered name or a ``package.module:Class`` path.

    Raises
    ------
    SegbenchError
        Naming ``name``: unknown and not an import path; its module fails to import (missing,
        or raising on import); the module has no such attribute; or the attribute is not a
        class with ``fit``, ``predict_proba`` and ``get_params``.
    """
    module, attr = _split(name)
    if name in METHODS:
        # A registered method's import error is the project's bug (or a broken optional
        # dependency): its own traceback says more than a message would.
        obj: object = importlib.import_module(module)
    else:
        try:
            obj = _import(module)
        except Exception as exc:  # noqa: BLE001 - whatever the user's module raised on import
            raise SegbenchError(
                f"method {name!r}: cannot import module {module!r} ({type(exc).__name__}: {exc})"
            ) from exc
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = ".".join([module, *attr.split(".")[:i]])
            raise SegbenchError(f"method {name!r}: {owner!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(obj, m, None))]
    if not inspect.isclass(obj) or missing:
        what = f"lacks {', '.join(missing)}" if inspect.isclass(obj) else "is not a class"
        raise SegbenchError(
            f"method {name!r}: {module}.{attr} is not a segmentation method ({what}); derive it "
            "from bench.method.SegmentationMethod and implement fit and predict_proba"
        )
    return obj


def param_names(cls: type) -> list[str]:
    """The constructor parameters of method class ``cls``, sorted.

    scikit-learn's ``_get_param_names`` where the class has it (every
    :class:`~bench.method.SegmentationMethod`); otherwise read off ``__init__``'s signature the
    same way, so that a user's scikit-learn-style class need not derive from ``BaseEstimator``.
    """
    if hasattr(cls, "_get_param_names"):
        return list(cls._get_param_names())
    if cls.__init__ is object.__init__:
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    return sorted(p.name for p in params if p.kind in kinds)


def build_method(name: str, params: dict | None = None):  # noqa: ANN201
    """An instance of method ``name`` with constructor parameters ``params``.

    ``name`` is a registered name or a ``package.module:Class`` import path.

    Raises
    ------
    SegbenchError
        If the name is unknown, the class cannot be imported or is not a method (see
        :func:`method_class`), or a parameter is not one the method takes.
    """
    cls = method_class(name)
    params = dict(params or {})
    known = set(param_names(cls))
    unknown = sorted(set(params) - known)
    if unknown:
        raise SegbenchError(
            f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(sorted(known)) or '(none)'}"
        )
    _check_types(name, cls, params)
    return cls(**params)


def _check_types(name: str, cls: type, params: dict) -> None:
    """Refuse a parameter whose YAML type cannot be what its default says it is.

    Methods check their values when they fit, which may be an hour into a run; these are the
    mistakes YAML makes easy and a method would not notice: ``yes`` for a number (a bool is an
    int in Python), a number for a switch, and ``1e-3`` (PyYAML reads it as a string) for a
    number. Only parameters whose default is a bool, an int or a float are checked: the others
    take several types on purpose (``class_weight``: a name or None).
    """
    try:
        defaults = {
            p.name: p.default
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.default is not inspect.Parameter.empty
        }
    except (TypeError, ValueError):  # no inspectable signature: nothing to compare with
        return
    for key, value in params.items():
        default = defaults.get(key)
        if default is None or value is None:
            continue
        if isinstance(default, bool):
            wrong = not isinstance(value, bool)
            wanted = "true or false"
        elif isinstance(default, int | float):
            # text where a float is meant, or text that reads as a number; other text may be
            # a name the parameter also takes (``max_features: sqrt``)
            wrong = isinstance(value, bool) or (
                isinstance(value, str) and (isinstance(default, float) or _is_number(value))
            )
            wanted = "a number"
        else:
            continue
        if wrong:
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) else ""
            raise SegbenchError(
                f"method {name!r}: parameter {key!r} must be {wanted}, not {value!r}{hint}"
            )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
