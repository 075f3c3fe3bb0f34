import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from bench.metrics import (
    ConfusionMatrix,
    bootstrap_miou_ci,
    confusion_matrix,
    format_scores,
    paired_bootstrap_diff,
    scores,
)

C, VOID = 11, 11


def reference_scores(pred, gt, n_classes, ignore):
    """An independent computation: sklearn's matrix, IoU from sets of pixels per class."""
    keep = gt != ignore
    p, g = pred[keep], gt[keep]
    cm = sk_confusion_matrix(g, p, labels=np.arange(n_classes))
    ious, accs = [], []
    for c in range(n_classes):
        inter = np.sum((p == c) & (g == c))
        union = np.sum((p == c) | (g == c))
        ious.append(inter / union if union else np.nan)
        accs.append(inter / np.sum(g == c) if np.sum(g == c) else np.nan)
    return cm, np.array(ious), np.array(accs)


@pytest.mark.parametrize("seed", range(5))
def test_random_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 12))
    gt = rng.integers(0, n_classes + 1, size=(37, 53)).astype(np.uint8)
    gt[gt == n_classes] = 255  # void
    pred = rng.integers(0, n_classes, size=gt.shape)
    cm = confusion_matrix(pred, gt, n_classes, 255)
    ref_cm, ref_iou, ref_acc = reference_scores(pred, gt, n_classes, 255)
    np.testing.assert_array_equal(cm, ref_cm)
    s = scores(cm)
    np.testing.assert_allclose(s["per_class_iou"], ref_iou)
    np.testing.assert_allclose(s["miou"], np.nanmean(ref_iou))
    np.testing.assert_allclose(s["mean_acc"], np.nanmean(ref_acc))
    keep = gt != 255
    np.testing.assert_allclose(s["global_acc"], np.mean(pred[keep] == gt[keep]))
    freq = np.bincount(gt[keep], minlength=n_classes) / keep.sum()
    np.testing.assert_allclose(s["fwiou"], np.nansum(freq * ref_iou))


def test_void_pixels_are_not_scored_whatever_the_prediction():
    gt = np.array([[0, 1, VOID, VOID]], dtype=np.uint8)
    a = confusion_matrix(np.array([[0, 1, 0, 0]]), gt, C, VOID)
    b = confusion_matrix(np.array([[0, 1, 5, 9]]), gt, C, VOID)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 2


def test_all_void_image_scores_nothing():
    gt = np.full((4, 5), VOID, dtype=np.uint8)
    cm = confusion_matrix(np.zeros((4, 5), int), gt, C, VOID)
    assert cm.sum() == 0
    s = scores(cm)
    assert np.isnan(s["miou"]) and np.isnan(s["global_acc"]) and np.isnan(s["mean_acc"])
    assert all(np.isnan(s["per_class_iou"]))


def test_one_class_only_perfect():
    gt = np.full((3, 3), 4, dtype=np.uint8)
    s = scores(confusion_matrix(np.full((3, 3), 4), gt, C, VOID))
    assert s["miou"] == 1.0 and s["global_acc"] == 1.0 and s["fwiou"] == 1.0
    # classes absent from both ground truth and prediction are NaN, not 0, and left out
    assert sum(not np.isnan(v) for v in s["per_class_iou"]) == 1


def test_class_only_in_prediction_counts_as_zero():
    gt = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    pred = np.array([[0, 0, 1, 2]])
    s = scores(confusion_matrix(pred, gt, 3, 255))
    assert s["per_class_iou"][2] == 0.0
    assert s["miou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    # class 2 is absent from the ground truth: its accuracy is NaN, not in the mean
    assert np.isnan(s["per_class_acc"][2])
    assert s["mean_acc"] == pytest.approx((1.0 + 0.5) / 2)


def test_empty_prediction_class_gets_zero_iou():
    gt = np.array([[0, 1, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 1]])  # class 2 never predicted
    s = scores(confusion_matrix(pred, gt, 3, 255))
    assert s["per_class_iou"] == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize("n_classes", [2, 11, 14, 15, 16, 40])
@pytest.mark.parametrize("shape", [(37, 53), (1, 1), (0, 4), (360, 480)])
@pytest.mark.parametrize("ignore", [255, "in range"])
def test_both_counting_paths_equal_a_plain_loop(n_classes, shape, ignore):
    # up to 15 classes the counts go through byte pairs, beyond through np.bincount: both must
    # equal a count done pixel by pixel, for odd pixel counts, an empty image, an ignore
    # index inside the byte range next to the classes, and int64 or uint8 predictions
    rng = np.random.default_rng(n_classes)
    void = n_classes if ignore == "in range" else 255
    gt = rng.integers(0, n_classes + 1, size=shape).astype(np.uint8)
    gt[gt == n_classes] = void
    pred = rng.integers(0, n_classes, size=shape)
    expected = np.zeros((n_classes, n_classes), np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
        if g != void:
            expected[g, p] += 1
    for p in (pred, pred.astype(np.uint8)):
        np.testing.assert_array_equal(confusion_matrix(p, gt, n_classes, void), expected)
    if gt.size:
        bad = gt.copy()
        bad.flat[-1] = 200  # neither a class nor void, in the last (odd) pixel
        with pytest.raises(ValueError, match=r"\[200\]"):
            confusion_matrix(pred, bad, n_classes, void)


def test_prediction_out_of_range_is_an_error():
    gt = np.zeros((2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="0..10"):
        confusion_matrix(np.full((2, 2), 11), gt, C, VOID)
    with pytest.raises(ValueError):
        confusion_matrix(np.full((2, 2), -1), gt, C, VOID)


def test_ground_truth_out_of_range_is_an_error():
    gt = np.array([[0, 12]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\[12\]"):
        confusion_matrix(np.zeros((1, 2), int), gt, C, VOID)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), np.uint8), C, VOID)


def test_streaming_sums_over_the_split_not_per_image_mean():
    # image 1 perfect and tiny; image 2 big and half wrong: per-image mean would be ~0.75
    acc = ConfusionMatrix(2, 255)
    acc.update(np.array([[0]]), np.array([[0]], np.uint8))
    acc.update(np.array([[0] * 99]), np.array([[0] * 50 + [1] * 49], np.uint8))
    assert acc.total.sum() == 100
    assert acc.scores()["global_acc"] == pytest.approx(51 / 100)
    assert len(acc.per_image) == 2


def test_bootstrap_interval_contains_estimate_and_narrows_with_agreement():
    rng = np.random.default_rng(0)
    per_image = []
    for _ in range(40):
        gt = rng.integers(0, 3, (20, 20)).astype(np.uint8)
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 3, gt.shape))
        per_image.append(confusion_matrix(pred, gt, 3, 255))
    per_image = np.stack(per_image)
    miou = scores(per_image.sum(0))["miou"]
    low, high = bootstrap_miou_ci(per_image, n_boot=500, seed=1)
    assert low < miou < high
    assert high - low < 0.1
    # identical images: no variation to resample
    same = np.repeat(per_image[:1], 40, axis=0)
    low2, high2 = bootstrap_miou_ci(same, n_boot=200)
    assert low2 == pytest.approx(high2)
    # reproducible with the seed
    assert bootstrap_miou_ci(per_image, n_boot=100, seed=3) == bootstrap_miou_ci(
        per_image, n_boot=100, seed=3
    )


def test_format_scores_lists_every_class():
    s = scores(np.eye(3, dtype=int) * 5)
    text = format_scores(s, ["a", "b", "c"], ci=(0.9, 1.0))
    assert "100.00" in text and text.count("\n") >= 7


def reference_bf(pred, gt, n_classes, ignore, tolerance=0.0075):
    """Slow, independent BF: morphological boundaries and full distance transforms."""
    from scipy import ndimage

    void = gt == ignore
    tol = tolerance * np.hypot(*gt.shape)
    cross = ndimage.generate_binary_structure(2, 1)

    def edge(mask):
        inside = mask | void
        return mask & ~ndimage.binary_erosion(inside, cross, border_value=1) & ~void

    f1s = []
    for c in np.unique(gt[~void]):
        g, p = edge(gt == c), edge(pred == c)
        if not g.any() or not p.any():
            f1s.append(float(g.any() == p.any()))
            continue
        precision = (p & (ndimage.distance_transform_edt(~g) <= tol)).sum() / p.sum()
        recall = (g & (ndimage.distance_transform_edt(~p) <= tol)).sum() / g.sum()
        f1s.append(
            0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        )
    return np.mean(f1s) if f1s else np.nan


def test_boundary_f1_matches_a_distance_transform_reference(camvid_root):
    from scipy import ndimage

    from bench.datasets import CamVid
    from bench.metrics import boundary_f1

    ds = CamVid("test", root=camvid_root, subset=3)
    rng = np.random.default_rng(0)
    for i in range(3):
        gt = ds.native_label(i)
        clean = np.where(gt == 11, 0, gt)
        for pred in (clean, ndimage.median_filter(clean, 7), np.roll(clean, 6, axis=1),
                     rng.integers(0, 11, gt.shape)):  # fmt: skip
            assert boundary_f1(pred, gt, 11, 11) == pytest.approx(reference_bf(pred, gt, 11, 11))
        assert boundary_f1(clean, gt, 11, 11) == 1.0


def test_boundary_f1_hand_cases():
    from bench.metrics import boundary_f1

    gt = np.zeros((100, 100), np.uint8)
    gt[:, 50:] = 1  # one vertical edge; tolerance = 0.0075 * 141.4 = 1.06 px
    assert boundary_f1(gt, gt, 2, 255) == 1.0
    shifted = np.zeros_like(gt)
    shifted[:, 51:] = 1
    assert boundary_f1(shifted, gt, 2, 255) == 1.0  # one pixel off: within tolerance
    shifted[:, 51:56] = 0
    assert boundary_f1(shifted, gt, 2, 255) == 0.0  # six pixels off: beyond it
    assert boundary_f1(np.zeros_like(gt), gt, 2, 255) == 0.0  # the edge is missed
    # an edge against void is nobody's boundary: predicting across void costs nothing
    gt_void = gt.copy()
    gt_void[:, 45:55] = 255
    pred = np.zeros_like(gt)
    pred[:, 48:] = 1
    assert boundary_f1(pred, gt_void, 2, 255) == 1.0
    assert np.isnan(boundary_f1(gt, np.full_like(gt, 255), 2, 255))


def test_paired_bootstrap_diff():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 20, size=(4, 4, 4))
    good = noise + 200 * np.eye(4, dtype=np.int64)  # four images, mostly right
    bad = noise + 10 * np.eye(4, dtype=np.int64)
    assert paired_bootstrap_diff(good, good) == (0.0, 0.0)
    low, high = paired_bootstrap_diff(good, bad, n_boot=200)
    assert 0 < low <= high
    # the shared resampling: the unpaired interval of each lies inside its own scores' range
    lo_g, hi_g = bootstrap_miou_ci(good, n_boot=200)
    lo_b, hi_b = bootstrap_miou_ci(bad, n_boot=200)
    assert lo_b < hi_b < lo_g < hi_g
    with pytest.raises(ValueError):
        paired_bootstrap_diff(good, good[:2])
