import numpy as np
import pytest
from helpers import evaluate

from baselines.class_prior import ClassPrior
from baselines.superpixel_crf import (
    SuperpixelClassifier,
    adjacency,
    balanced_weights,
    context_features,
    majority_labels,
    superpixel_features,
    superpixels,
)
from bench.datasets import Synthetic

# Small settings per algorithm: about 60-150 superpixels on a 64x80 image.
VARIANTS = {
    "slic": {"n_segments": 120, "compactness": 10.0},
    "felzenszwalb": {"scale": 30.0, "min_size": 10},
    "quickshift": {"kernel_size": 2.0, "max_dist": 6.0},
}


@pytest.fixture(scope="module")
def data():
    train = Synthetic("train", n_images=12, size=(64, 80))
    test = Synthetic("test", n_images=6, size=(64, 80))
    return train, test, evaluate(ClassPrior().fit(train), test)


@pytest.mark.parametrize("algorithm", sorted(VARIANTS))
def test_each_variant_learns_well_above_chance(data, algorithm):
    train, test, prior = data
    method = SuperpixelClassifier(
        algorithm=algorithm, n_estimators=30, n_jobs=1, **VARIANTS[algorithm]
    )
    method.fit(train)
    s = evaluate(method, test)
    assert s["miou"] > 0.4 and s["miou"] > prior["miou"] + 0.2, s
    assert s["mean_acc"] > 0.55
    proba = method.predict_proba(test.image(0))
    assert proba.shape == (64, 80, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-5)
    # probabilities are constant over each superpixel
    seg = method.segment(test.image(0))
    first = proba.reshape(-1, 4)[np.unique(seg.ravel(), return_index=True)[1]]
    np.testing.assert_array_equal(proba, first[seg])


def test_extra_trees_and_seeding(data):
    train, test, prior = data
    kw = dict(classifier="extra_trees", n_estimators=15, n_jobs=1, random_state=1, context=False)
    a = SuperpixelClassifier(**kw, **VARIANTS["slic"]).fit(train)
    b = SuperpixelClassifier(**kw, **VARIANTS["slic"]).fit(train)
    np.testing.assert_array_equal(a.predict_proba(test.image(0)), b.predict_proba(test.image(0)))
    assert evaluate(a, test)["miou"] > prior["miou"] + 0.2
    with pytest.raises(ValueError, match="unknown classifier"):
        SuperpixelClassifier(classifier="svm").fit(train)


def test_superpixels_are_renumbered_without_gaps():
    image = Synthetic("test", n_images=1, size=(64, 80)).image(0)
    for algorithm, params in VARIANTS.items():
        seg = superpixels(image, algorithm, params)
        assert seg.shape == (64, 80)
        assert np.array_equal(np.unique(seg), np.arange(seg.max() + 1))
    with pytest.raises(ValueError, match="unknown superpixel"):
        superpixels(image, "watershed", {})
    with pytest.raises(ValueError, match="unknown superpixel"):
        SuperpixelClassifier(algorithm="watershed").fit(Synthetic("train", n_images=1))


def test_features_pool_each_superpixel():
    # two superpixels: left half red, right half blue
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :10, 0] = 200
    image[:, 10:, 2] = 200
    seg = np.zeros((10, 20), int)
    seg[:, 10:] = 1
    f = superpixel_features(image, seg, context=True)
    g = superpixel_features(image, seg, context=False)
    assert f.shape[0] == 2 and f.shape[1] > g.shape[1] and np.isfinite(f).all()
    assert f[0, 1] > 40 and f[1, 2] < -40  # CIELAB a* of red, b* of blue
    # context = mean appearance of the (only) neighbour: left's context is right's appearance
    n_app = f.shape[1] - g.shape[1]
    np.testing.assert_allclose(f[0, -n_app:], g[1, :n_app], rtol=1e-5)
    adj = adjacency(seg).toarray()
    np.testing.assert_array_equal(adj, [[0, 1], [1, 0]])


def test_majority_labels_and_balanced_weights():
    seg = np.array([[0, 0, 1, 1]])
    label = np.array([[2, 9, 9, 9]], np.uint8)
    majority, labelled = majority_labels(seg, label, 3, 9)
    assert majority[0] == 2 and labelled.tolist() == [1, 0]
    targets = np.array([0, 0, 1])
    pixels = np.array([10.0, 30.0, 10.0])
    w = balanced_weights(targets, pixels, 2, power=1.0)
    assert w[:2].sum() == pytest.approx(w[2])  # each class the same total weight
    w0 = balanced_weights(targets, pixels, 2, power=0.0)
    np.testing.assert_allclose(w0, pixels / pixels.mean())  # by area


def test_auto_context_round_learns_and_is_seeded(data):
    train, test, prior = data
    kw = dict(n_estimators=20, n_jobs=1, context_rounds=1, context_folds=3, **VARIANTS["slic"])
    a = SuperpixelClassifier(**kw).fit(train)
    assert len(a.classifiers_) == 2 and a.classifier_ is a.classifiers_[-1]
    # the second round sees the first round's context: 10 blocks of C probabilities more
    assert a.classifiers_[1].n_features_in_ == a.classifiers_[0].n_features_in_ + 10 * 4
    s = evaluate(a, test)
    assert s["miou"] > prior["miou"] + 0.2, s
    b = SuperpixelClassifier(**kw).fit(train)
    np.testing.assert_array_equal(a.predict_proba(test.image(0)), b.predict_proba(test.image(0)))
    with pytest.raises(ValueError, match="context_folds"):
        SuperpixelClassifier(context_rounds=1, context_folds=1).fit(train)


def test_context_features_on_a_hand_made_image():
    # three horizontal bands: 0 (top), 1 (middle), 2 (bottom), each 2 rows of a 6x4 image
    seg = np.repeat(np.array([0, 1, 2]), 2)[:, None].repeat(4, axis=1)
    proba = np.eye(3)  # each superpixel sure of its own class
    f = context_features(seg, proba)
    assert f.shape == (3, 30)
    own, one_hop, two_hop, scene = f[:, :3], f[:, 3:6], f[:, 6:9], f[:, 9:12]
    np.testing.assert_array_equal(own, proba)
    np.testing.assert_allclose(one_hop[1], [0.5, 0, 0.5])  # the middle band's two neighbours
    np.testing.assert_allclose(one_hop[0], [0, 1, 0])
    np.testing.assert_allclose(two_hop[0], [0.5, 0, 0.5])
    np.testing.assert_allclose(scene, np.full((3, 3), 1 / 3))
    above, below, left, right, col_above, col_below = (
        f[:, 12 + 3 * i : 15 + 3 * i] for i in range(6)
    )
    np.testing.assert_allclose(above[1], [1, 0, 0])  # above the middle band: the top band
    np.testing.assert_allclose(below[1], [0, 0, 1])
    np.testing.assert_allclose(col_below[0], [0, 0.5, 0.5])  # all below the top band
    np.testing.assert_allclose(col_above[0], [0, 0, 0])  # nothing above: empty box, zeros
    np.testing.assert_allclose(left[1], [0, 0, 0])  # bands span the width: nothing beside


def test_several_segmentations_average_their_members(data):
    train, test, prior = data
    kw = dict(n_estimators=15, n_jobs=1, context=False, **VARIANTS["slic"], min_size=10, scale=30.0)
    both = SuperpixelClassifier(algorithm="felzenszwalb+slic", **kw).fit(train)
    assert [m.algorithm for m in both.members_] == ["felzenszwalb", "slic"]
    image = test.image(0)
    expected = np.mean([m.predict_proba(image) for m in both.members_], axis=0)
    np.testing.assert_allclose(both.predict_proba(image), expected)
    assert evaluate(both, test)["miou"] > prior["miou"] + 0.2
    with pytest.raises(ValueError, match="several segmentations"):
        both.segment(image)
