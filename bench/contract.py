"""The method contract: one suite of checks any segmentation method must pass.

The analogue of scikit-learn's ``check_estimator``: point :func:`check_method` at an instance
of your own class (unfitted, with the parameters you want checked) and it fits a copy on a small
synthetic dataset and checks what the runner and the report rely on (the interface is
documented in :mod:`bench.method`):

========================  ======================================================================
check                     what it asserts
========================  ======================================================================
``check_init``            ``__init__`` stores every parameter unchanged and learns nothing (no
                          public attribute ending in ``_``, none that is not a parameter)
``check_clone``           :func:`sklearn.base.clone` works and gives equal ``get_params()``
``check_fit``             ``fit(train, val)`` returns ``self``, sets at least one attribute
                          ending in ``_`` and leaves the training images unchanged
``check_predict_proba``   on the training size and two odd, non-square sizes: a finite,
                          non-negative float32/float64 (H, W, C) array, each pixel summing to 1
``check_predict``         ``predict`` is uint8 (H, W) and equals the argmax of ``predict_proba``
``check_input_unchanged`` ``predict_proba`` and ``predict`` leave the image array unchanged
``check_seeded``          two fresh fits with the same ``random_state`` give the same
                          probabilities (only for methods that take a ``random_state``)
========================  ======================================================================

:func:`method_checks` yields the checks one by one, named, like
``check_estimator(generate_only=True)``; they share one fitted copy, fitted on first need, so
running them all costs one fit (two with ``check_seeded``). Every failure is an
:class:`AssertionError` whose message starts with the check's name and the method's class, an
exception raised by the method included (chained as its cause).

Example
-------
>>> from baselines.colour_forest import ColourForest
>>> check_method(ColourForest(n_estimators=2, pixels_per_image=100, n_jobs=1))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

from bench.datasets.base import SegmentationDataset, resize_image
from bench.datasets.synthetic import Synthetic
from bench.runner import check_proba

#: Sizes (H, W) ``predict_proba`` is checked on besides the training size: non-square, odd (so
#: no multiple of 2, 8 or 32), one wider and one taller than high, both smaller than the default
#: training images. They catch networks that assume a stride-divisible input and grids (cells,
#: strides, patches) that overhang the image.
ODD_SIZES: tuple[tuple[int, int], ...] = ((37, 53), (45, 31))
#: Same ``random_state``: probabilities equal up to this (absolute), not bit for bit, so that a
#: different summation order in inference (threads, BLAS) is not read as a seeding bug.
SEEDED_ATOL = 1e-6
#: Each pixel's probabilities sum to 1 within this: the runner's own tolerance
#: (:func:`bench.runner.check_proba`), stated here for the docs; the check itself calls it.
SUM_ATOL = 1e-3
#: Training images compared before and after ``fit`` (all of the default split).
_WATCHED_IMAGES = 8


def synthetic_datasets() -> tuple[Synthetic, Synthetic]:
    """The default data of the contract: 6 training and 2 validation images, 48x64, 4 classes.

    Small so that the suite takes seconds for the classical methods; a test that must fit
    something on the same data (a prefit estimator for a stage) calls this too.
    """
    return Synthetic("train", n_images=6, size=(48, 64)), Synthetic(
        "val", n_images=2, size=(48, 64)
    )


def fresh_copy(method: BaseEstimator) -> BaseEstimator:
    """An unfitted copy of ``method`` with the same parameters.

    :func:`sklearn.base.clone`, except for a stage (``estimator`` and ``prefit=True``, like
    :class:`~baselines.dense_crf.DenseCRF`): clone would clone its estimator too, dropping the
    learned state ``prefit`` promises, so the copy refines the very same fitted estimator.
    """
    copy = clone(method)
    params = method.get_params(deep=False)
    if params.get("prefit") and "estimator" in params:
        copy.set_params(estimator=params["estimator"])
    return copy


def check_method(
    method: BaseEstimator,
    *,
    train: SegmentationDataset | None = None,
    val: SegmentationDataset | None = None,
    n_classes: int | None = None,
) -> None:
    """Run every check of the contract on ``method``; raise at the first that fails.

    Parameters
    ----------
    method : SegmentationMethod
        An instance with the parameters to check; it is neither fitted nor changed (the checks
        fit copies of it).
    train, val : SegmentationDataset, optional
        Data to fit on (``val`` is passed to ``fit``). Default: :func:`synthetic_datasets`
        (``val`` defaults to its split only when ``train`` is defaulted too).
    n_classes : int, optional
        Classes the probabilities must have (default ``train.n_classes``).

    Raises
    ------
    AssertionError
        Naming the check that failed and what was wrong.
    """
    for _name, check in method_checks(method, train=train, val=val, n_classes=n_classes):
        check()


def method_checks(
    method: BaseEstimator,
    *,
    train: SegmentationDataset | None = None,
    val: SegmentationDataset | None = None,
    n_classes: int | None = None,
) -> Iterator[tuple[str, Callable[[], None]]]:
    """The checks of the contract as ``(name, check)`` pairs, in the order they should run.

    Parameters are those of :func:`check_method`. Each ``check()`` takes no argument and raises
    :class:`AssertionError` (message starting with ``name``) when it fails. The checks share a
    fitted copy of ``method``, fitted by the first check that needs it, so any one of them can
    also run alone (a broken method can be tested against the one check it should fail).
    """
    if train is None:
        train, default_val = synthetic_datasets()
        val = default_val if val is None else val
    context = _Context(method, train, val, train.n_classes if n_classes is None else n_classes)
    checks: list[Callable[[_Context], None]] = [
        check_init,
        check_clone,
        check_fit,
        check_predict_proba,
        check_predict,
        check_input_unchanged,
    ]
    if "random_state" in method.get_params(deep=False):
        checks.append(check_seeded)
    for check in checks:
        yield check.__name__, functools.partial(_run, check, context)


class _Context:
    """What the checks share: the method, the data, the test images and one lazy fit."""

    def __init__(
        self,
        method: BaseEstimator,
        train: SegmentationDataset,
        val: SegmentationDataset | None,
        n_classes: int,
    ) -> None:
        self.method = method
        self.train = train
        self.val = val
        self.n_classes = n_classes
        first = train.image(0)
        # One image per size, all from the training data: the method must handle its own
        # kind of input, only at sizes other than the one it was trained at.
        self.images = {f"{first.shape[0]}x{first.shape[1]}": first}
        for h, w in ODD_SIZES:
            self.images[f"{h}x{w}"] = resize_image(train.image(min(1, len(train) - 1)), (h, w))
        self._fitted: BaseEstimator | None = None
        self.fit_returned: Any = None
        self.changed_training_images: list[str] = []

    def fitted(self) -> BaseEstimator:
        """A copy of the method fitted on ``train`` (fitted once, on first call)."""
        if self._fitted is None:
            model = fresh_copy(self.method)
            # Datasets cache their arrays (Synthetic does), so an in-place change in fit would
            # silently corrupt the data every later fit and score sees. The first few images
            # are enough to catch it and keep the copies small on a real training split.
            watched = range(min(len(self.train), _WATCHED_IMAGES))
            before = [np.array(self.train.image(i), copy=True) for i in watched]
            self.fit_returned = model.fit(self.train, self.val)
            self.changed_training_images = [
                self.train.names[i]
                for i, old in zip(watched, before, strict=True)
                if not np.array_equal(self.train.image(i), old)
            ]
            self._fitted = model
        return self._fitted

    def image(self, key: str) -> np.ndarray:
        """A private copy of test image ``key``: a method that writes into it harms no other."""
        return np.array(self.images[key], copy=True)


def _run(check: Callable[[_Context], None], context: _Context) -> None:
    """Run ``check``, prefixing any failure (the method's own exceptions too) with its name."""
    where = f"{check.__name__} ({type(context.method).__name__})"
    try:
        check(context)
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}") from exc
    except Exception as exc:  # the method raised: still a failed check, named, with the cause
        raise AssertionError(f"{where}: raised {type(exc).__name__}: {exc}") from exc


def _require(condition: bool, message: str) -> None:
    # not ``assert``: the contract must hold under ``python -O`` too
    if not condition:
        raise AssertionError(message)


def _learned(obj: object) -> list[str]:
    """Public attributes ending in ``_``: scikit-learn's mark of state learned in fit."""
    return sorted(k for k in vars(obj) if k.endswith("_") and not k.startswith("_"))


def _same(a: Any, b: Any) -> bool:
    """Parameter equality as :func:`~sklearn.base.clone` promises it.

    Estimators (a stage's ``estimator``) are compared by class and parameters, since clone makes
    a new one; arrays elementwise; NaN equals NaN.
    """
    if isinstance(a, BaseEstimator) or isinstance(b, BaseEstimator):
        return type(a) is type(b) and _same_params(
            a.get_params(deep=False), b.get_params(deep=False)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # an object without a usable ==
        return a is b


def _same_params(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


def check_init(context: _Context) -> None:
    """``__init__`` stores each parameter as given and nothing else (scikit-learn's rule).

    Rebuilt from ``get_params()`` rather than checked on the instance given, which the caller
    may have fitted already.
    """
    method = context.method
    params = method.get_params(deep=False)
    rebuilt = type(method)(**params)
    changed = [k for k, v in rebuilt.get_params(deep=False).items() if v is not params[k]]
    _require(
        not changed,
        f"__init__ does not store parameter(s) {changed} unchanged (validate and convert them "
        "in fit, so that clone and set_params work)",
    )
    learned = _learned(rebuilt)
    _require(not learned, f"__init__ sets learned attribute(s) {learned}; only fit may")
    extra = sorted(k for k in vars(rebuilt) if not k.startswith("_") and k not in params)
    _require(not extra, f"__init__ sets attribute(s) {extra} that are not parameters")


def check_clone(context: _Context) -> None:
    """``clone`` works and the clone has equal parameters."""
    method = context.method
    copy = clone(method)
    _require(copy is not method, "clone returned the same object")
    a, b = method.get_params(deep=False), copy.get_params(deep=False)
    differ = sorted(
        k for k in a.keys() | b.keys() if k not in a or k not in b or not _same(a[k], b[k])
    )
    _require(not differ, f"the clone's get_params() differ in {differ}")


def check_fit(context: _Context) -> None:
    """``fit`` returns ``self``, learns some ``_`` attribute and leaves the training data alone."""
    model = context.fitted()
    _require(
        context.fit_returned is model,
        f"fit must return self, returned {type(context.fit_returned).__name__}",
    )
    _require(bool(_learned(model)), "fit set no learned attribute (a name ending in '_')")
    changed = context.changed_training_images
    _require(not changed, f"fit modified the training image(s) {changed[:3]}")


def check_predict_proba(context: _Context) -> None:
    """Class probabilities of the right shape and kind at the training size and odd sizes."""
    model = context.fitted()
    for key in context.images:
        image = context.image(key)
        proba = model.predict_proba(image)
        where = f"on a {key} image"
        try:  # the runner's own check: shape, finite, sums to 1 (atol SUM_ATOL)
            check_proba(proba, image.shape[:2], context.n_classes, where)
        except ValueError as exc:
            raise AssertionError(str(exc)) from None
        _require(
            proba.dtype in (np.float32, np.float64),
            f"{where}: predict_proba must be float32 or float64, got {proba.dtype}",
        )
        _require(
            bool((proba >= 0).all()),
            f"{where}: predict_proba has negative probabilities (min {proba.min():.3g})",
        )


def check_predict(context: _Context) -> None:
    """``predict`` is uint8 (H, W) and the argmax of ``predict_proba``."""
    model = context.fitted()
    for key in context.images:
        image = context.image(key)
        label = model.predict(image)
        where = f"on a {key} image"
        _require(
            isinstance(label, np.ndarray) and label.shape == image.shape[:2],
            f"{where}: predict must return an array {image.shape[:2]}, "
            f"got {getattr(label, 'shape', type(label).__name__)}",
        )
        _require(label.dtype == np.uint8, f"{where}: predict must be uint8, got {label.dtype}")
        expected = np.argmax(model.predict_proba(image), axis=-1)
        wrong = int((label != expected).sum())
        _require(
            wrong == 0, f"{where}: predict differs from argmax(predict_proba) on {wrong} pixels"
        )


def check_input_unchanged(context: _Context) -> None:
    """``predict_proba`` and ``predict`` leave the image they are given as it was."""
    model = context.fitted()
    for key in context.images:
        for name in ("predict_proba", "predict"):
            image = context.image(key)
            getattr(model, name)(image)
            changed = int((image != context.images[key]).any(axis=-1).sum())
            _require(changed == 0, f"{name} modified {changed} pixels of its {key} input image")


def check_seeded(context: _Context) -> None:
    """Two fresh fits with the same ``random_state`` predict the same probabilities.

    A different seed is not required to differ: a method may draw nothing at random on some
    data. The comparison is on the training-size image.
    """
    first = context.fitted()
    second = fresh_copy(context.method)
    second.fit(context.train, context.val)
    key = next(iter(context.images))
    a = first.predict_proba(context.image(key))
    b = second.predict_proba(context.image(key))
    _require(
        a.shape == b.shape, f"two fits with one random_state give shapes {a.shape} and {b.shape}"
    )
    diff = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
    _require(
        diff <= SEEDED_ATOL,
        f"two fits with random_state={context.method.get_params()['random_state']!r} differ by "
        f"up to {diff:.3g} in predict_proba on the {key} image (allowed {SEEDED_ATOL:g}): the "
        "seed does not reach every source of randomness",
    )
