import json

import numpy as np
import pytest

from baselines.superpixel_quality import (
    achievable_segmentation_accuracy,
    boundary_map,
    boundary_recall,
    main,
    majority_labelling,
    undersegmentation_error,
)

VOID = 9


def halves(h=8, w=8, col=4):
    """Ground truth: class 0 left of column ``col``, class 1 from it on."""
    gt = np.zeros((h, w), dtype=np.uint8)
    gt[:, col:] = 1
    return gt


def test_boundary_map_is_one_pixel_on_the_upper_left_side():
    b = boundary_map(halves())
    assert b[:, 3].all() and b.sum() == 8  # only column 3 (left of the edge)
    gt = halves()
    gt[:, 4] = VOID  # the only edge now touches void on both sides
    assert not boundary_map(gt, ignore_index=VOID).any()
    assert boundary_map(gt).sum() == 16


def test_boundary_recall_with_and_without_tolerance():
    gt = halves()
    assert boundary_recall(halves(col=4), gt, tolerance=0) == 1.0
    # superpixel edge 2 columns off: recalled with tolerance 2, not with 1
    assert boundary_recall(halves(col=6), gt, tolerance=2) == 1.0
    assert boundary_recall(halves(col=6), gt, tolerance=1) == 0.0
    # top half of the superpixel edge moved 3 columns right: exactly, rows 4-7 are matched;
    # with tolerance 1 also rows 2-3, near the new horizontal edge ending at (3, 4)
    seg = halves(col=4)
    seg[:4, 4:7] = 0
    assert boundary_recall(seg, gt, tolerance=0) == pytest.approx(4 / 8)
    assert boundary_recall(seg, gt, tolerance=1) == pytest.approx(6 / 8)
    # one superpixel: nothing recalled; no ground-truth edge: undefined
    assert boundary_recall(np.zeros((8, 8), int), gt) == 0.0
    assert np.isnan(boundary_recall(seg, np.zeros((8, 8), np.uint8)))


def test_undersegmentation_error_neubert_protzel():
    gt = halves()  # two segments of 32 pixels
    assert undersegmentation_error(halves(), gt) == 0.0
    # finer superpixels never leak: still 0
    fine = np.arange(64).reshape(8, 8)
    assert undersegmentation_error(fine, gt) == 0.0
    # one superpixel covering both: each segment charged min(32, 32) -> 64/64
    assert undersegmentation_error(np.zeros((8, 8), int), gt) == 1.0
    # superpixel edge one column right: superpixel 0 = 32 in G0 + 8 in G1.
    # G0: min(32, 8) = 8; G1: min(8, 32) = 8 (sp 0) + min(24, 0) = 0 (sp 1) -> 16/64
    assert undersegmentation_error(halves(col=5), gt) == pytest.approx(16 / 64)
    # two separate blobs of one class are two segments: a superpixel joining them leaks
    gt2 = np.zeros((4, 6), np.uint8)
    gt2[:, 2:4] = 1  # class 0 | class 1 | class 0
    seg2 = np.zeros((4, 6), int)
    seg2[:, 2:4] = 1  # one superpixel for both outer blobs
    # sp 0 has 8 px in each blob: each blob charged min(8, 8) = 8 -> 16/24
    assert undersegmentation_error(seg2, gt2) == pytest.approx(16 / 24)


def test_undersegmentation_error_ignores_void():
    gt = halves()
    gt[:, 4:] = VOID
    assert undersegmentation_error(np.zeros((8, 8), int), gt, ignore_index=VOID) == 0.0
    assert np.isnan(undersegmentation_error(np.zeros((2, 2), int), np.full((2, 2), VOID), VOID))


def test_asa_and_majority_labelling():
    gt = halves()
    assert achievable_segmentation_accuracy(halves(), gt, 2) == 1.0
    # one superpixel: majority gets 32 of 64
    assert achievable_segmentation_accuracy(np.zeros((8, 8), int), gt, 2) == 0.5
    # edge one column right: superpixel 0 labelled 0, 8 pixels of class 1 lost
    assert achievable_segmentation_accuracy(halves(col=5), gt, 2) == pytest.approx(56 / 64)
    # void is neither counted nor allowed to win the majority
    gt3 = gt.copy()
    gt3[:, :3] = VOID  # left superpixel: 8 px of class 0, 24 void
    seg = halves()
    pred = majority_labelling(seg, gt3, 2, VOID)
    assert (pred[:, :4] == 0).all() and (pred[:, 4:] == 1).all()
    assert achievable_segmentation_accuracy(seg, gt3, 2, VOID) == 1.0


def test_main_writes_json_and_markdown(tmp_path, camvid_root):
    result = main(["--subset", "2", "--resolution", "90", "120", "--out-dir", str(tmp_path)])
    stored = json.loads((tmp_path / "superpixels.json").read_text())
    assert stored["n_images"] == 2
    assert [r["algorithm"] for r in stored["algorithms"]] == [
        "slic", "felzenszwalb", "quickshift", "watershed"
    ]  # fmt: skip
    for r in result["algorithms"]:
        assert 0 < r["boundary_recall"] <= 1 and 0 <= r["undersegmentation_error"] < 1
        assert 0.5 < r["asa"] <= 1 and 0 < r["miou_upper_bound"] <= 1
        assert r["segments_mean"] > 10
    md = (tmp_path / "superpixels.md").read_text()
    assert "python -m baselines.superpixel_quality --subset 2" in md
    assert "| quickshift |" in md and "| watershed |" in md
