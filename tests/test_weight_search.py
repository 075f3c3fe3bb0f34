"""The shared weight search of the graph cut and the relative-location prior."""

import numpy as np
import pytest

from baselines.weight_search import check_weights, tune_weight
from bench.datasets.synthetic import Synthetic


def test_tune_weight_keeps_the_best_and_the_smallest_on_ties():
    val = Synthetic("val", n_images=6, size=(24, 32))
    truth = {}
    for i in range(len(val)):
        image, label, _ = val[i]
        truth[image.tobytes()] = np.where(label == val.ignore_index, 0, label).astype(np.uint8)
    seen = []

    def predict(image, ws):
        seen.append(1)
        right = truth[image.tobytes()]
        wrong = np.zeros_like(right)
        # weights 1 and 2 give the true labels (a tie), 0 and 4 give class 0 everywhere
        return [right if w in (1.0, 2.0) else wrong for w in ws]

    weight, search = tune_weight(val, [0.0, 2.0, 1.0, 4.0], tune_images=6, predict=predict)
    assert weight == 1.0
    assert [r["weight"] for r in search] == [0.0, 2.0, 1.0, 4.0]
    assert search[1]["miou"] == search[2]["miou"] == pytest.approx(1.0)
    assert search[0]["miou"] < 1.0
    assert len(seen) == 6  # once per image, not once per image and weight


def test_tune_weight_uses_evenly_spaced_images():
    val = Synthetic("val", n_images=10, size=(16, 16))
    calls = []
    tune_weight(
        val, [0.0], 3, lambda image, ws: calls.append(1) or [np.zeros(image.shape[:2], np.uint8)]
    )
    assert len(calls) == 3


@pytest.mark.parametrize("bad", [[], [-1.0], ["x"], None, [0.5, -0.1]])
def test_check_weights_names_the_bad_list(bad):
    with pytest.raises(ValueError, match="weights must be non-negative numbers"):
        check_weights(bad)


def test_check_weights_gives_floats():
    assert check_weights([0, "1.5", 2]) == [0.0, 1.5, 2.0]
