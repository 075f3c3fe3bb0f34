"""The floor every table should show: the training split's class distribution, everywhere."""

from __future__ import annotations

import numpy as np

from bench.method import SegmentationMethod


class ClassPrior(SegmentationMethod):
    """Predicts the training class frequencies at every pixel (so always the most frequent class).

    It looks at no pixel of the test image: any method that does not beat it has learned
    nothing. Its mIoU is roughly the most frequent class's share divided by the class count.
    """

    def __init__(self) -> None:
        pass

    def fit(self, dataset, val_dataset=None) -> ClassPrior:  # noqa: ANN001
        self.n_classes_ = dataset.n_classes
        self.prior_ = dataset.class_frequencies().astype(np.float32)
        if self.prior_.sum() == 0:
            raise ValueError("the training split has no labelled pixel")
        return self

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.broadcast_to(self.prior_, (h, w, self.n_classes_)).copy()
