import numpy as np
import pytest
from helpers import evaluate
from scipy import ndimage

from baselines.class_prior import ClassPrior
from baselines.superpixel_quality import (
    achievable_segmentation_accuracy,
    boundary_recall,
    undersegmentation_error,
)
from baselines.superpixels import (
    SuperpixelClassifier,
    adjacency,
    balanced_weights,
    compact_watershed,
    context_features,
    grid_seeds,
    lab_gradient,
    majority_labels,
    superpixel_features,
    superpixels,
)
from bench.datasets import Synthetic

# Small settings per algorithm (SuperpixelClassifier parameters): about 60-150 superpixels on
# a 64x80 image.
VARIANTS = {
    "slic": {"n_segments": 120, "compactness": 10.0},
    "felzenszwalb": {"scale": 30.0, "min_size": 10},
    "quickshift": {"kernel_size": 2.0, "max_dist": 6.0},
    "watershed": {"n_segments": 120, "watershed_compactness": 0.3},
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


@pytest.mark.parametrize("algorithm", ["slic", "watershed"])
def test_extra_trees_and_seeding(data, algorithm):
    train, test, prior = data
    kw = dict(classifier="extra_trees", n_estimators=15, n_jobs=1, random_state=1, context=False)
    a = SuperpixelClassifier(algorithm=algorithm, **kw, **VARIANTS[algorithm]).fit(train)
    b = SuperpixelClassifier(algorithm=algorithm, **kw, **VARIANTS[algorithm]).fit(train)
    np.testing.assert_array_equal(a.predict_proba(test.image(0)), b.predict_proba(test.image(0)))
    assert evaluate(a, test)["miou"] > prior["miou"] + 0.2
    with pytest.raises(ValueError, match="unknown classifier"):
        SuperpixelClassifier(classifier="svm").fit(train)


def test_superpixels_are_renumbered_without_gaps():
    image = Synthetic("test", n_images=1, size=(64, 80)).image(0)
    for algorithm, params in VARIANTS.items():
        seg = SuperpixelClassifier(algorithm=algorithm, **params).segment(image)
        assert seg.shape == (64, 80)
        assert np.array_equal(np.unique(seg), np.arange(seg.max() + 1))
    with pytest.raises(ValueError, match="unknown superpixel"):
        superpixels(image, "seeds", {})
    with pytest.raises(ValueError, match="unknown superpixel"):
        SuperpixelClassifier(algorithm="seeds").fit(Synthetic("train", n_images=1))


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


@pytest.mark.parametrize("second", ["slic", "watershed"])
def test_several_segmentations_average_their_members(data, second):
    train, test, prior = data
    kw = dict(
        n_estimators=15, n_jobs=1, context=False, **VARIANTS[second], **VARIANTS["felzenszwalb"]
    )
    both = SuperpixelClassifier(algorithm=f"felzenszwalb+{second}", **kw).fit(train)
    assert [m.algorithm for m in both.members_] == ["felzenszwalb", second]
    image = test.image(0)
    expected = np.mean([m.predict_proba(image) for m in both.members_], axis=0)
    np.testing.assert_allclose(both.predict_proba(image), expected)
    assert evaluate(both, test)["miou"] > prior["miou"] + 0.2
    with pytest.raises(ValueError, match="several segmentations"):
        both.segment(image)


# -- compact watershed ----------------------------------------------------------------------
def quadrants() -> tuple[np.ndarray, np.ndarray]:
    """A 64x80 image of four flat quadrants (edges at row 27, column 45: off the seed grid) and
    its labels. Three of the colours have the same grey value (skimage's rgb2gray, 0.471):
    only a colour gradient tells them apart."""
    gt = np.zeros((64, 80), np.uint8)
    gt[:27, 45:] = 1
    gt[27:, :45] = 2
    gt[27:, 45:] = 3
    colours = np.array([(60, 130, 200), (80, 135, 90), (120, 120, 120), (200, 60, 60)], np.uint8)
    return colours[gt], gt


def test_grid_seeds_sit_at_cell_centres_and_move_to_the_lowest_relief():
    flat = np.zeros((60, 80))
    markers = grid_seeds(flat, 12)  # step 20 px: 3 rows x 4 columns of seeds
    expected = np.zeros((60, 80), bool)
    expected[np.ix_([10, 30, 50], [10, 30, 50, 70])] = True
    np.testing.assert_array_equal(markers > 0, expected)
    assert sorted(markers[expected].tolist()) == list(range(1, 13))
    ridge = flat.copy()
    ridge[10, 10] = 5.0  # a seed on an edge ...
    ridge[11, 9] = -1.0  # ... moves to the lowest pixel beside it
    moved = grid_seeds(ridge, 12)
    assert moved[10, 10] == 0 and moved[11, 9] > 0 and np.count_nonzero(moved) == 12
    assert np.count_nonzero(grid_seeds(np.zeros((5, 5)), 1000)) == 25  # at most one per pixel


def test_lab_gradient_sees_an_edge_of_equal_grey():
    image, gt = quadrants()
    g = lab_gradient(image)
    # Blue (60, 130, 200) is CIELAB (53.1, 1.1, -42.7), green (80, 135, 90) is (51.6, -28.4,
    # 18.6): Delta E 68.0, and Sobel gives d / sqrt(2) on the two pixels beside a step.
    assert g[10, 44] == pytest.approx(g[10, 45]) == pytest.approx(68.0 / np.sqrt(2), rel=0.01)
    assert g[10, 20] < 1e-9 and g[26, 20] > 10  # flat inside; edge between blue and grey


@pytest.mark.parametrize("n_segments", [60, 120, 240])
def test_compact_watershed_recovers_flat_regions(n_segments):
    image, gt = quadrants()
    # Plain watershed (compactness 0): exactly the regions' edges.
    plain = compact_watershed(image, n_segments, compactness=0.0)
    assert boundary_recall(plain, gt, tolerance=0) == 1.0
    assert undersegmentation_error(plain, gt) == 0.0
    assert achievable_segmentation_accuracy(plain, gt, 4) == 1.0
    # Compact: every edge found within one pixel; only the two pixels beside an edge (equal
    # gradient, which goes to the nearer seed) can be on the wrong side.
    seg = compact_watershed(image, n_segments, compactness=0.3)
    assert abs(int(seg.max()) - n_segments) <= 0.05 * n_segments
    assert boundary_recall(seg, gt, tolerance=1) == 1.0
    core = np.zeros(gt.shape, bool)
    for k in range(4):
        core |= ndimage.binary_erosion(gt == k, border_value=1)
    classes_per_segment = np.unique(np.stack([seg[core], gt[core]]), axis=1)[0]
    assert np.bincount(classes_per_segment).max() == 1  # no segment holds two regions' cores
    # So at most one pixel a side of each edge is lost: 80 + 64 pixels, each charged to UE
    # twice (inside one region, outside the other).
    lost = 80 + 64
    assert achievable_segmentation_accuracy(seg, gt, 4) >= 1 - lost / gt.size - 1e-12
    assert undersegmentation_error(seg, gt) <= 2 * lost / gt.size + 1e-12


def test_compactness_makes_segments_regular():
    noise = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    # The limit of a high compactness: each pixel goes to the nearest seed (Voronoi cells).
    markers = grid_seeds(lab_gradient(noise), 80)
    _, (iy, ix) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    voronoi = markers[iy, ix]
    spread, voronoi_share = [], []
    for c in (0.0, 0.3, 3.0, 30.0):
        seg = compact_watershed(noise, 80, compactness=c)
        sizes = np.bincount(seg.ravel())[1:]
        assert sizes.size == 80 and sizes.min() > 0
        spread.append(sizes.std() / sizes.mean())
        voronoi_share.append((seg == voronoi).mean())
    assert spread == sorted(spread, reverse=True) and spread[0] > 0.5 and spread[-1] < 0.2
    assert voronoi_share == sorted(voronoi_share) and voronoi_share[-1] > 0.95  # ties differ


def test_compact_watershed_is_deterministic_and_connected():
    image = Synthetic("test", n_images=1, size=(64, 80)).image(0)
    a = compact_watershed(image, 120, 0.3)
    np.testing.assert_array_equal(a, compact_watershed(image, 120, 0.3))
    for k in np.unique(a):
        assert ndimage.label(a == k)[1] == 1  # one 4-connected piece per superpixel
