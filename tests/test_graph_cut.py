"""Graph cuts: alpha-expansion on hand-made graphs with known optima, the superpixel graph."""

import itertools

import numpy as np
import pytest

from baselines.graph_cut import (
    SuperpixelGraphCut,
    alpha_expansion,
    potts_energy,
    superpixel_graph,
    superpixel_proba,
)
from baselines.superpixels import SuperpixelClassifier
from bench.datasets import Synthetic


def brute_force(unary, edges, weights):
    n, c = unary.shape
    best = min(itertools.product(range(c), repeat=n),
               key=lambda lab: potts_energy(np.array(lab), unary, edges, weights))  # fmt: skip
    return np.array(best), potts_energy(np.array(best), unary, edges, weights)


def random_graph(rng, n, c, p=0.5):
    edges = np.array([(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < p])
    edges = edges.reshape(-1, 2)
    return rng.random((n, c)) * 3, edges, rng.random(len(edges)) * 2


def test_a_chain_whose_optimum_is_known():
    # the middle node prefers 1 a little; its two neighbours want 0 strongly and cutting both
    # edges costs 2 x 1.5 > 1 of unary gain: the optimum is all 0 (energy 1)
    unary = np.array([[0.0, 5.0], [1.0, 0.0], [0.0, 5.0]])
    edges = np.array([[0, 1], [1, 2]])
    labels = alpha_expansion(unary, edges, np.array([1.5, 1.5]))
    assert labels.tolist() == [0, 0, 0]
    assert potts_energy(labels, unary, edges, np.array([1.5, 1.5])) == pytest.approx(1.0)
    # with cheap edges the middle keeps its own label
    assert alpha_expansion(unary, edges, np.array([0.2, 0.2])).tolist() == [0, 1, 0]


@pytest.mark.parametrize("seed", range(20))
def test_two_labels_reach_the_global_optimum(seed):
    # with two labels one expansion is the exact binary min cut
    rng = np.random.default_rng(seed)
    unary, edges, weights = random_graph(rng, 7, 2)
    labels = alpha_expansion(unary, edges, weights)
    _, best = brute_force(unary, edges, weights)
    assert potts_energy(labels, unary, edges, weights) == pytest.approx(best)


@pytest.mark.parametrize("seed", range(20))
def test_several_labels_stay_within_the_expansion_bound(seed):
    rng = np.random.default_rng(100 + seed)
    unary, edges, weights = random_graph(rng, 6, 3)
    labels = alpha_expansion(unary, edges, weights)
    energy = potts_energy(labels, unary, edges, weights)
    _, best = brute_force(unary, edges, weights)
    # Boykov, Veksler & Zabih 2001: within twice the optimum for Potts, and never above the
    # start (each node's cheapest label)
    assert best - 1e-9 <= energy <= 2 * best + 1e-9
    assert energy <= potts_energy(unary.argmin(1), unary, edges, weights) + 1e-9
    # a local minimum: no single expansion move lowers it
    for alpha in range(3):
        for switch in itertools.product([False, True], repeat=6):
            moved = np.where(np.array(switch), alpha, labels)
            assert potts_energy(moved, unary, edges, weights) >= energy - 1e-9


def test_no_pairwise_term_is_each_node_on_its_own():
    rng = np.random.default_rng(0)
    unary, edges, weights = random_graph(rng, 8, 4)
    assert (alpha_expansion(unary, edges, 0 * weights) == unary.argmin(1)).all()
    with pytest.raises(ValueError, match="non-negative"):
        alpha_expansion(unary, edges, -weights - 1)


def test_superpixel_graph_of_two_regions():
    segments = np.zeros((6, 8), np.intp)
    segments[:, 5:] = 1
    image = np.zeros((6, 8, 3), np.uint8)
    image[:, 5:] = 200
    edges, strength, area = superpixel_graph(image, segments)
    assert edges.tolist() == [[0, 1]]
    assert area.tolist() == [30.0, 18.0]
    # one edge: beta = 1 / (2 d^2), so the factor is 6 boundary pairs x exp(-1/2)
    assert strength == pytest.approx([6 * np.exp(-0.5)])


@pytest.fixture(scope="module")
def data():
    size = (48, 64)
    return Synthetic("train", n_images=6, size=size), Synthetic("val", n_images=3, size=size)


def test_superpixel_proba_is_what_the_classifier_predicts(data):
    train, _ = data
    method = SuperpixelClassifier(n_segments=60, n_estimators=5, n_jobs=1, context_rounds=1,
                                  context_folds=2).fit(train)  # fmt: skip
    image = train[0][0]
    segments, proba = superpixel_proba(method, image)
    assert np.array_equal(proba[segments], method.predict_proba(image))


def test_the_method_tunes_its_weight_on_val_and_predicts_labels(data):
    train, val = data
    method = SuperpixelGraphCut(
        superpixel={"n_segments": 60, "n_estimators": 5, "n_jobs": 1},
        weights=[0.0, 2.0], tune_images=2,
    ).fit(train, val)  # fmt: skip
    assert method.weight_ in (0.0, 2.0)
    assert [r["weight"] for r in method.fit_summary()["search"]] == [0.0, 2.0]
    proba = method.predict_proba(val[0][0])
    assert proba.shape == (48, 64, train.n_classes)
    assert set(np.unique(proba)) <= {0.0, 1.0} and (proba.sum(-1) == 1).all()
    # weight 0 is the classifier alone
    alone = SuperpixelGraphCut(superpixel={"n_segments": 60, "n_estimators": 5, "n_jobs": 1},
                               weights=[0.0]).fit(train)  # fmt: skip
    expected = alone.classifier_.predict(val[0][0])
    assert np.array_equal(alone.predict(val[0][0]), expected)


def test_several_algorithms_are_refused(data):
    train, _ = data
    with pytest.raises(ValueError, match="one superpixel algorithm"):
        SuperpixelGraphCut(superpixel={"algorithm": "slic+felzenszwalb"}).fit(train)


@pytest.mark.parametrize("weights", [[-1.0], [], ["a"], 3])
def test_bad_weights_are_refused_before_the_classifier_is_fitted(data, weights, monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before the weights were checked")

    monkeypatch.setattr(SuperpixelClassifier, "fit", no_fit)
    with pytest.raises(ValueError, match="weights must be non-negative numbers"):
        SuperpixelGraphCut(weights=weights).fit(data[0])
