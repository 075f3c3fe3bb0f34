"""Per-pixel colour classifier: a random forest on the CIELAB colour of each pixel alone."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2lab
from sklearn.ensemble import RandomForestClassifier

from bench.method import SegmentationMethod, full_proba, sample_pixels


def lab_features(image: np.ndarray) -> np.ndarray:
    """CIELAB colour of every pixel, float32 (H*W, 3)."""
    return rgb2lab(image).reshape(-1, 3).astype(np.float32)


class ColourForest(SegmentationMethod):
    """Random forest on pixel colour (CIELAB): the simplest method that looks at the image.

    It knows nothing of texture, shape or context, so it shows how much of a table colour alone
    explains (sky, road and vegetation) and how little of the small classes.

    Parameters
    ----------
    n_estimators, max_depth, min_samples_leaf : int
        Passed to :class:`sklearn.ensemble.RandomForestClassifier`.
    pixels_per_image : int
        Labelled pixels sampled uniformly from each training image.
    class_weight : str or None
        ``"balanced"`` weighs classes by inverse frequency in the sample, so the small classes
        (pole, sign, pedestrian...) that dominate mIoU are not ignored.
    n_jobs : int
        Threads of the forest (fit and predict).
    random_state : int
    """

    def __init__(
        self,
        n_estimators: int = 30,
        max_depth: int | None = 16,
        min_samples_leaf: int = 5,
        pixels_per_image: int = 2000,
        class_weight: str | None = "balanced",
        n_jobs: int = -1,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.pixels_per_image = pixels_per_image
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, dataset, val_dataset=None) -> ColourForest:  # noqa: ANN001
        rng = np.random.default_rng(self.random_state)
        features, targets = [], []
        for image, label, _ in dataset:
            index = sample_pixels(label, self.pixels_per_image, dataset.ignore_index, rng)
            features.append(lab_features(image)[index])
            targets.append(label.ravel()[index])
        self.n_classes_ = dataset.n_classes
        self.forest_ = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            class_weight=self.class_weight,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        ).fit(np.concatenate(features), np.concatenate(targets))
        return self

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        proba = self.forest_.predict_proba(lab_features(image))
        return full_proba(proba, self.forest_.classes_, self.n_classes_).reshape(h, w, -1)
