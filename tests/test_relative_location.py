"""The relative-location prior: maps of a planted layout, votes, the method end to end."""

import numpy as np
import pytest

from baselines.relative_location import (
    SuperpixelRelativeLocation,
    cross_correlations,
    location_votes,
    relative_location_maps,
    shrink_label,
)
from bench.datasets import Synthetic


def test_shrink_label_gives_class_shares_per_cell_without_void():
    label = np.array([[0, 0, 1, 1], [0, 255, 1, 1]], np.uint8)
    shares = shrink_label(label, (1, 2), n_classes=2)
    assert shares[:, 0, 0] == pytest.approx([3 / 4, 0.0])  # the void pixel counts for no class
    assert shares[:, 0, 1] == pytest.approx([0.0, 1.0])


def test_cross_correlation_counts_pairs_at_each_offset():
    # class 0 at (0, 0), class 1 one row below it: M[0, 1] at offset (+1, 0) only
    maps = np.zeros((2, 3, 3))
    maps[0, 0, 0] = 1.0
    maps[1, 1, 0] = 1.0
    out = cross_correlations(maps)
    centre = (2, 2)
    assert out[0, 1, centre[0] + 1, centre[1]] == pytest.approx(1.0)
    assert out[0, 1].sum() == pytest.approx(1.0)
    assert out[1, 0, centre[0] - 1, centre[1]] == pytest.approx(1.0)  # seen from class 1: above


def layout(n_rows=12, n_cols=16):
    """Sky (0) over building (1) over road (2): the rows of a street scene."""
    label = np.zeros((n_rows, n_cols), np.uint8)
    label[n_rows // 3 : 2 * n_rows // 3] = 1
    label[2 * n_rows // 3 :] = 2
    return label


def test_maps_learn_what_lies_below_what():
    counts = cross_correlations(shrink_label(layout(), (12, 16), 3))
    maps = relative_location_maps(counts, smoothing=0.0, exclude=1)
    centre = (11, 15)
    # far below sky there is road, far above road there is sky
    assert maps[0, :, centre[0] + 9, centre[1]].argmax() == 2
    assert maps[2, :, centre[0] - 9, centre[1]].argmax() == 0
    # for every class and seen offset the target classes sum to 1
    sums = maps.sum(axis=1)
    assert np.allclose(sums[sums > 0], 1.0)


def test_votes_of_a_confident_top_favour_what_lies_below_it():
    counts = cross_correlations(shrink_label(layout(), (12, 16), 3))
    maps = relative_location_maps(counts, smoothing=0.0, exclude=1)
    proba = np.full((3, 12, 16), 1 / 3)
    proba[:, :4] = np.array([1.0, 0.0, 0.0])[:, None, None]  # certain sky on top, unsure below
    votes = location_votes(proba, maps)
    assert np.allclose(votes.sum(axis=0), 1.0)
    assert votes[:, 11, 8].argmax() == 2  # the bottom row: road
    assert votes[2, 11, 8] > votes[2, 5, 8]  # road more expected low than in the middle


@pytest.fixture(scope="module")
def data():
    size = (48, 64)
    return Synthetic("train", n_images=6, size=size), Synthetic("val", n_images=3, size=size)


def test_the_method_tunes_its_weight_and_weight_0_is_the_classifier(data):
    train, val = data
    common = {"superpixel": {"n_segments": 60, "n_estimators": 5, "n_jobs": 1}, "grid": [6, 8]}
    method = SuperpixelRelativeLocation(**common, weights=[0.0, 1.0], tune_images=2).fit(train, val)
    assert method.weight_ in (0.0, 1.0)
    assert [r["weight"] for r in method.fit_summary()["search"]] == [0.0, 1.0]
    proba = method.predict_proba(val[0][0])
    assert proba.shape == (48, 64, train.n_classes) and np.allclose(proba.sum(-1), 1.0)
    alone = SuperpixelRelativeLocation(**common, weights=[0.0]).fit(train)
    image = val[0][0]
    assert np.allclose(alone.predict_proba(image), alone.classifier_.predict_proba(image))


@pytest.mark.parametrize("weights", [[-1.0], [], "x"])
def test_bad_weights_are_refused(data, weights):
    with pytest.raises(ValueError, match="weights must be non-negative"):
        SuperpixelRelativeLocation(weights=weights).fit(data[0])
