"""Block bootstrap within sequences, mean-over-images mIoU, per-sequence scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bench.datasets import CamVid
from bench.metrics import (
    block_bootstrap_indices,
    bootstrap_miou_ci,
    mean_image_miou,
    paired_bootstrap_diff,
    scores,
    scores_by_group,
)


def random_cms(n: int, c: int = 3, seed: int = 0, drift: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cms = rng.integers(0, 30, size=(n, c, c)).astype(np.int64)
    if drift:  # strongly autocorrelated: quality drifts slowly along the frames
        quality = np.repeat(rng.integers(0, 400, size=n // 10 + 1), 10)[:n]
        cms += quality[:, None, None] * np.eye(c, dtype=np.int64)
    else:
        cms += 60 * np.eye(c, dtype=np.int64)
    return cms


def test_blocks_keep_group_sizes_and_draw_consecutive_runs_within_a_group():
    groups = ["a"] * 7 + ["b"] * 12 + ["c"] * 2
    idx = block_bootstrap_indices(groups, 21, 200, 4, np.random.default_rng(0))
    assert idx.shape == (200, 21)
    labels = np.asarray(groups)
    assert (labels[idx] == labels).all()  # every position draws from its own group
    for row in idx:
        for start in range(7, 19, 4):  # group b: blocks of 4 start at 7, 11, 15
            block = row[start : min(start + 4, 19)]
            assert (np.diff(block) == 1).all()
    # a group shorter than the block is kept whole, in order
    assert (idx[:, 19:] == [19, 20]).all()


def test_block_bootstrap_is_seeded():
    cms = random_cms(40)
    groups = ["a"] * 20 + ["b"] * 20
    one = bootstrap_miou_ci(cms, seed=3, groups=groups, block_length=5)
    assert one == bootstrap_miou_ci(cms, seed=3, groups=groups, block_length=5)
    assert one != bootstrap_miou_ci(cms, seed=4, groups=groups, block_length=5)


def test_blocks_widen_the_interval_on_autocorrelated_frames():
    cms = random_cms(200, drift=True)
    low1, high1 = bootstrap_miou_ci(cms, n_boot=2000, groups=["s"] * 200, block_length=1)
    low10, high10 = bootstrap_miou_ci(cms, n_boot=2000, groups=["s"] * 200, block_length=10)
    assert high10 - low10 > 1.5 * (high1 - low1)


def test_image_bootstrap_agrees_with_scipy():
    """Percentile interval (block 1, one group) equals scipy.stats.bootstrap within MC error."""
    cms = random_cms(60, seed=1)

    def miou(index):
        return scores(cms[np.asarray(index, dtype=int)].sum(axis=0))["miou"]

    ref = stats.bootstrap(
        (np.arange(60),), miou, n_resamples=4000, method="percentile", vectorized=False,
        random_state=np.random.default_rng(0),
    )  # fmt: skip
    ours = bootstrap_miou_ci(cms, n_boot=4000, seed=0, groups=["s"] * 60, block_length=1)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    # Monte-Carlo error of a 2.5 % quantile with 4000 resamples is a few % of the width
    assert ours[0] == pytest.approx(ref.confidence_interval.low, abs=0.08 * width)
    assert ours[1] == pytest.approx(ref.confidence_interval.high, abs=0.08 * width)


def test_paired_gap_with_blocks():
    a, b = random_cms(40, seed=0), random_cms(40, seed=0)
    b[:, 0, 0] -= 40  # b is worse on every frame
    low, high = paired_bootstrap_diff(a, b, groups=["x"] * 40, block_length=8)
    assert 0 < low <= high
    assert paired_bootstrap_diff(a, a, groups=["x"] * 40, block_length=8) == (0.0, 0.0)


def test_mean_image_miou_differs_from_dataset_miou_as_documented():
    big = np.array([[1000, 0], [0, 0]])  # image 1: only class 0, perfect
    small = np.array([[0, 0], [10, 0]])  # image 2: class 1 all wrong
    cms = np.stack([big, small])
    assert mean_image_miou(cms) == pytest.approx((1.0 + 0.0) / 2)
    total = scores(cms.sum(axis=0))["miou"]
    assert total == pytest.approx((1000 / 1010 + 0.0) / 2)


def test_scores_by_group_on_camvid_sequences(camvid_root):
    test = CamVid("test", root=camvid_root)
    assert set(test.groups) == {"0001TP", "Seq05VD"}
    cms = random_cms(len(test))
    per = scores_by_group(cms, test.groups)
    assert per["0001TP"]["n_images"] == 62 and per["Seq05VD"]["n_images"] == 171
    assert per["0001TP"]["miou"] == scores(cms[:62].sum(axis=0))["miou"]


def test_selection_splits_partition_train(camvid_root):
    sel_train, sel = CamVid("select_train", root=camvid_root), CamVid("select", root=camvid_root)
    train = CamVid("train", root=camvid_root)
    assert (len(sel_train), len(sel)) == (266, 101)
    assert set(sel.groups) == {"0006R0"} and "0006R0" not in sel_train.groups
    assert set(sel_train.names) | set(sel.names) == set(train.names)
