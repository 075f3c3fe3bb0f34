"""Methods that misbehave on purpose, to test how the runner copes."""

import numpy as np

from bench.method import SegmentationMethod


class Boom(SegmentationMethod):
    """Fails in fit (or in predict with ``where="predict"``)."""

    def __init__(self, where: str = "fit") -> None:
        self.where = where

    def fit(self, dataset, val_dataset=None):
        if self.where == "fit":
            raise RuntimeError("boom in fit")
        self.n_classes_ = dataset.n_classes
        return self

    def predict_proba(self, image):
        raise RuntimeError("boom in predict")


class Interrupt(SegmentationMethod):
    """Simulates a kill (Ctrl-C) during fit."""

    def fit(self, dataset, val_dataset=None):
        raise KeyboardInterrupt

    def predict_proba(self, image):  # pragma: no cover
        raise AssertionError


class BadShape(SegmentationMethod):
    def fit(self, dataset, val_dataset=None):
        return self

    def predict_proba(self, image):
        return np.ones((2, 2, 2), np.float32)


class Oracle(SegmentationMethod):
    """Counts fits; predicts class 1 everywhere with certainty (for exact expected scores)."""

    fits = 0

    def fit(self, dataset, val_dataset=None):
        Oracle.fits += 1
        self.n_classes_ = dataset.n_classes
        return self

    def predict_proba(self, image):
        proba = np.zeros((*image.shape[:2], self.n_classes_), np.float32)
        proba[..., 1] = 1.0
        return proba


class FakeStage(SegmentationMethod):
    """A stage like the dense CRF: refines a prefit estimator (here: flips to class 0)."""

    def __init__(self, estimator=None, prefit: bool = False, strength: float = 1.0) -> None:
        self.estimator = estimator
        self.prefit = prefit
        self.strength = strength

    def fit(self, dataset, val_dataset=None):
        if not self.prefit:
            self.estimator.fit(dataset, val_dataset)
        self.tuned_on_ = None if val_dataset is None else val_dataset.split
        return self

    def fit_summary(self):
        return {"tuned_on": self.tuned_on_}

    def predict_proba(self, image):
        proba = self.estimator.predict_proba(image)[..., ::-1]
        return np.ascontiguousarray(proba)


class NaNLater(SegmentationMethod):
    """Fine on the first image, NaN on the second: every image must be checked."""

    def fit(self, dataset, val_dataset=None):
        self.n_classes_ = dataset.n_classes
        self.calls_ = 0
        return self

    def predict_proba(self, image):
        self.calls_ += 1
        proba = np.full((*image.shape[:2], self.n_classes_), 1.0 / self.n_classes_, np.float32)
        if self.calls_ == 3:  # warm-up call, image 0, then image 1
            proba[0, 0, 0] = np.nan
        return proba


class Seeded(SegmentationMethod):
    """Predicts a class drawn from its random_state: shows whether the seed reaches it."""

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def fit(self, dataset, val_dataset=None):
        self.n_classes_ = dataset.n_classes
        self.class_ = int(np.random.default_rng(self.random_state).integers(self.n_classes_))
        return self

    def predict_proba(self, image):
        proba = np.zeros((*image.shape[:2], self.n_classes_), np.float32)
        proba[..., self.class_] = 1.0
        return proba


# -- broken on purpose for the contract suite (tests/test_contract.py): one fault each ----------


class _Uniform(SegmentationMethod):
    """A correct base: uniform probabilities. Each fault below overrides one thing."""

    def fit(self, dataset, val_dataset=None):
        self.n_classes_ = dataset.n_classes
        return self

    def predict_proba(self, image):
        return np.full((*image.shape[:2], self.n_classes_), 1.0 / self.n_classes_, np.float32)


class Unnormalised(_Uniform):
    """Every pixel sums to 2."""

    def predict_proba(self, image):
        return 2 * super().predict_proba(image)


class Negative(_Uniform):
    """Sums to 1, but with a negative 'probability'."""

    def predict_proba(self, image):
        proba = np.zeros((*image.shape[:2], self.n_classes_), np.float32)
        proba[..., 0], proba[..., 1] = 1.5, -0.5
        return proba


class HalfPrecision(_Uniform):
    """float16 probabilities."""

    def predict_proba(self, image):
        return super().predict_proba(image).astype(np.float16)


class NotArgmax(_Uniform):
    """``predict`` is not the argmax of ``predict_proba``."""

    def predict_proba(self, image):
        proba = np.zeros((*image.shape[:2], self.n_classes_), np.float32)
        proba[..., 1] = 1.0
        return proba

    def predict(self, image):
        return np.zeros(image.shape[:2], np.uint8)


class NotSelf(_Uniform):
    """``fit`` returns nothing."""

    def fit(self, dataset, val_dataset=None):
        super().fit(dataset, val_dataset)


class Mutates(_Uniform):
    """Writes into the image it predicts (e.g. normalising in place)."""

    def predict_proba(self, image):
        image[..., 0] = 0
        return super().predict_proba(image)


class MutatesTraining(_Uniform):
    """Writes into the training images in ``fit``."""

    def fit(self, dataset, val_dataset=None):
        for i in range(len(dataset)):
            dataset.image(i)[:2] = 0
        return super().fit(dataset, val_dataset)


class LearnsInInit(_Uniform):
    """Sets a learned attribute in ``__init__``."""

    def __init__(self) -> None:
        self.classes_ = None


class ConvertsParam(_Uniform):
    """``__init__`` converts its parameter instead of storing it as given."""

    def __init__(self, sizes=(1, 2)) -> None:
        self.sizes = list(sizes)


class Unseeded(_Uniform):
    """Takes a ``random_state`` but draws from an unseeded generator."""

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def fit(self, dataset, val_dataset=None):
        super().fit(dataset, val_dataset)
        self.weights_ = np.random.default_rng().dirichlet(np.ones(self.n_classes_))
        return self

    def predict_proba(self, image):
        return np.broadcast_to(self.weights_, (*image.shape[:2], self.n_classes_)).copy()


class DieOnce(SegmentationMethod):
    """Kills the process it fits in the first time (a worker lost mid-task), then works.

    ``marker`` is a file: absent, the fit creates it and exits the process at once.
    """

    def __init__(self, marker: str = "", random_state: int = 0) -> None:
        self.marker = marker
        self.random_state = random_state

    def fit(self, dataset, val_dataset=None):
        import os
        from pathlib import Path

        if self.marker and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        self.n_classes_ = dataset.n_classes
        return self

    def predict_proba(self, image):
        proba = np.zeros((*image.shape[:2], self.n_classes_), np.float32)
        proba[..., 0] = 1.0
        return proba
