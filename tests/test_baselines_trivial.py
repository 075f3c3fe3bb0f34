import numpy as np
import pytest
from helpers import evaluate

from baselines.class_prior import ClassPrior
from baselines.colour_forest import ColourForest
from bench.datasets import Synthetic


@pytest.fixture(scope="module")
def data():
    return Synthetic("train", n_images=12, size=(48, 64)), Synthetic(
        "test", n_images=6, size=(48, 64)
    )


def test_class_prior_predicts_the_most_frequent_class(data):
    train, test = data
    method = ClassPrior().fit(train)
    proba = method.predict_proba(test.image(0))
    assert proba.shape == (48, 64, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-6)
    assert (method.predict(test.image(0)) == np.argmax(train.class_frequencies())).all()
    assert method.get_params() == {}


def test_colour_forest_learns_well_above_chance(data):
    train, test = data
    method = ColourForest(n_estimators=10, pixels_per_image=400, n_jobs=1).fit(train)
    s = evaluate(method, test)
    prior = evaluate(ClassPrior().fit(train), test)
    # chance mIoU for 4 classes is far below 0.25; the prior gets only the ground class
    assert s["miou"] > 0.35 and s["miou"] > prior["miou"] + 0.15
    assert s["mean_acc"] > 0.5
    proba = method.predict_proba(test.image(1))
    assert proba.shape == (48, 64, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-5)
    assert method.get_params()["n_estimators"] == 10


def test_colour_forest_is_seeded(data):
    train, test = data
    a = ColourForest(n_estimators=5, pixels_per_image=200, random_state=3).fit(train)
    b = ColourForest(n_estimators=5, pixels_per_image=200, random_state=3).fit(train)
    np.testing.assert_array_equal(a.predict_proba(test.image(0)), b.predict_proba(test.image(0)))
