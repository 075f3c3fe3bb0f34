import numpy as np
import pytest
from helpers import evaluate

from baselines.class_prior import ClassPrior
from baselines.texton_forest import (
    ABSDIFF,
    DIFF,
    SUM,
    VALUE,
    TextonForest,
    draw_pixel_tests,
    lab_planes,
    pixel_tests_at,
    pixel_tests_dense,
    texton_of_node,
)
from bench.datasets import Synthetic

SMALL = dict(n_estimators=4, max_depth=10, pixels_per_image=300, n_jobs=1)
STAGE2 = dict(SMALL, stage2=True, cell_size=2, stage2_estimators=4, stage2_pixels_per_image=300)


@pytest.fixture(scope="module")
def data():
    return Synthetic("train", n_images=12, size=(48, 64)), Synthetic(
        "test", n_images=6, size=(48, 64)
    )


@pytest.fixture(scope="module")
def prior_scores(data):
    train, test = data
    return evaluate(ClassPrior().fit(train), test)


def test_pixel_tests_on_a_hand_made_image():
    # Black image, one white pixel at (1, 3): CIELAB L is 100 there and 0 elsewhere, a = b = 0.
    image = np.zeros((5, 6, 3), dtype=np.uint8)
    image[1, 3] = 255
    radius = 2
    planes = lab_planes(image, radius)
    bank = np.array(
        [
            [VALUE, 0, 0, 1, 0, 0],  # L one pixel to the right
            [SUM, 0, 0, 1, 0, 0],  # L(right) + L(here)
            [DIFF, 0, 0, 0, 0, 1],  # L(here) - L(right)
            [ABSDIFF, 0, 0, 0, 0, 1],  # |L(here) - L(right)|
            [VALUE, 0, -2, 0, 0, 0],  # L two rows up: reflected at the top border
            [VALUE, 1, 0, 0, 0, 0],  # a channel
        ]
    )
    dense = pixel_tests_dense(planes, bank, radius, slice(0, 5)).T.reshape(5, 6, -1)
    at = pixel_tests_at(planes, bank, radius, np.arange(30)).reshape(5, 6, -1)
    np.testing.assert_array_equal(dense, at)
    np.testing.assert_allclose(dense[1, 2], [100, 100, -100, 100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(dense[1, 3, :4], [0, 100, 100, 100], atol=1e-3)
    # Row -1 reflects to row 1: pixel (1, 3) seen from (1 - 2, ...) i.e. from row 3 it is 100.
    assert dense[3, 3, 4] == pytest.approx(100, abs=1e-3)
    assert dense[0, 3, 4] == pytest.approx(0, abs=1e-3)  # row -2 reflects to row 2
    assert np.abs(dense[..., 5]).max() < 1e-2  # a of pure white is 0 up to rounding
    assert np.abs(dense[..., 0]).sum() == pytest.approx(100, abs=1e-2)  # only (1, 2) sees it


def test_dense_and_sampled_tests_agree_on_a_random_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    bank = draw_pixel_tests(60, 4, rng)
    planes = lab_planes(image, 4)
    dense = np.concatenate(
        [pixel_tests_dense(planes, bank, 4, slice(y, min(y + 5, 17))) for y in range(0, 17, 5)],
        axis=1,
    ).T
    index = rng.choice(17 * 23, 50, replace=False)
    np.testing.assert_array_equal(pixel_tests_at(planes, bank, 4, index), dense[index])
    assert set(bank[:, 0]) == {VALUE, SUM, DIFF, ABSDIFF} and np.abs(bank[:, 2:]).max() <= 4


def test_textons_are_the_ancestors_at_the_chosen_depth(data):
    train, _ = data
    method = TextonForest(**SMALL, max_features=10).fit(train)
    tree = method.forest_.estimators_[0]
    texton, n = texton_of_node(tree, 3, offset=5)
    t = tree.tree_
    leaves = t.children_left == -1
    # Leaves (what pixels reach) all have a texton; internal nodes above depth 3 have none.
    assert texton[leaves].min() == 5 and n == len(np.unique(texton[texton >= 0])) and n <= 2**3
    # Walk from the root: below depth 3 every node inherits its parent's texton.
    stack = [(0, 0)]
    while stack:
        node, depth = stack.pop()
        for child in (t.children_left[node], t.children_right[node]):
            if child != -1:
                if depth + 1 > 3:
                    assert texton[child] == texton[node]
                stack.append((child, depth + 1))


def test_stage1_learns_well_above_chance(data, prior_scores):
    train, test = data
    method = TextonForest(**SMALL).fit(train)
    s = evaluate(method, test)
    assert s["miou"] > 0.35 and s["miou"] > prior_scores["miou"] + 0.15
    assert s["mean_acc"] > 0.55


def test_stage2_and_image_prior_learn_well_above_chance(data, prior_scores):
    train, test = data
    method = TextonForest(**STAGE2, image_prior_power=0.5).fit(train)
    s = evaluate(method, test)
    assert s["miou"] > 0.3 and s["miou"] > prior_scores["miou"] + 0.1
    assert s["mean_acc"] > 0.5
    # shape, dtype and sums on odd sizes (the cell grid overhangs): tests/test_contract.py
    prior = method._image_prior(*method._stage1_maps(test.image(0)))
    assert prior.shape == (4,) and (prior > 0).all() and (prior <= 1).all()


def test_region_features_match_brute_force_means(data):
    train, test = data
    method = TextonForest(**STAGE2, n_rectangles=6, n_texton_features=20).fit(train)
    image = test.image(0)
    proba, texton = method._stage1_maps(image)
    cells = method._cell_features(proba, texton, image.shape[:2])
    h, w, s, c = 48, 64, 2, 4
    hc, wc = h // s, w // s
    cell_proba = proba.reshape(hc, s, wc, s, c).mean((1, 3))
    np.testing.assert_allclose(cells[:, :c], cell_proba.reshape(-1, c), atol=1e-5)
    for r, (top, left, bottom, right) in enumerate(method.rects_):
        y0 = int(np.floor(top * hc))
        y1 = max(int(np.ceil(bottom * hc)), y0 + 1)
        x0 = int(np.floor(left * wc))
        x1 = max(int(np.ceil(right * wc)), x0 + 1)
        for cy, cx in [(0, 0), (hc // 2, wc // 3), (hc - 1, wc - 1)]:
            ys = slice(np.clip(cy + y0, 0, hc), np.clip(cy + y1, 0, hc))
            xs = slice(np.clip(cx + x0, 0, wc), np.clip(cx + x1, 0, wc))
            region = cell_proba[ys, xs]
            got = cells[cy * wc + cx, (r + 1) * c : (r + 2) * c]
            want = region.reshape(-1, c).mean(0) if region.size else np.full(c, -1.0)
            np.testing.assert_allclose(got, want, atol=1e-4)


def test_seeded(data):
    train, test = data
    a = TextonForest(**STAGE2, random_state=3).fit(train)
    b = TextonForest(**STAGE2, random_state=3).fit(train)
    np.testing.assert_array_equal(a.predict_proba(test.image(0)), b.predict_proba(test.image(0)))
    c = TextonForest(**STAGE2, random_state=4).fit(train)
    assert not np.array_equal(a.tests_, c.tests_)


def test_stage2_learns_from_distributions_of_forests_that_did_not_see_the_image(data, monkeypatch):
    train, _ = data
    seen = []
    real = TextonForest._grow_stage1

    def grow(self, x, y, seed):
        seen.append(len(y))
        return real(self, x, y, seed)

    monkeypatch.setattr(TextonForest, "_grow_stage1", grow)
    model = TextonForest(**STAGE2, stage2_folds=3).fit(train)
    # the final forest on all 12 images' samples, then 3 forests each without a third of them
    assert seen[0] == 12 * 300 and seen[1:] == [8 * 300] * 3
    # in-sample (the paper's way): the final forest only
    seen.clear()
    TextonForest(**STAGE2, stage2_folds=1).fit(train)
    assert seen == [12 * 300]
    assert hasattr(model, "forest2_")
    with pytest.raises(ValueError, match="stage2_folds must be an integer >= 1"):
        TextonForest(**STAGE2, stage2_folds=0).fit(train)


def test_a_forest_s_posterior_is_the_mean_of_its_leaf_distributions(data):
    train, _ = data
    model = TextonForest(**STAGE2, stage2_folds=3).fit(train)
    image = train[0][0]
    proba, _ = model._stage1_maps(image)
    again = model._posterior(model._leaves(image, model.forest_), model.leaf_proba_)
    assert np.array_equal(again, proba)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
