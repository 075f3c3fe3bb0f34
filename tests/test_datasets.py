import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from bench.datasets import CamVid, Synthetic, data_root, load_dataset
from bench.datasets.base import evenly_spaced
from bench.errors import SegbenchError

# Pixel counts per class over the 367 training labels, from the dataset's README.
README_TRAIN_COUNTS = [
    10_682_767, 14_750_079, 623_349, 20_076_880, 2_845_085, 6_166_762,
    743_859, 714_595, 3_719_877, 405_385, 184_967,
]  # fmt: skip


def test_split_sizes_and_items(camvid_root):
    assert [len(CamVid(s, root=camvid_root)) for s in ("train", "val", "test")] == [367, 101, 233]
    image, label, name = CamVid("test", root=camvid_root)[0]
    assert image.shape == (360, 480, 3) and image.dtype == np.uint8
    assert label.shape == (360, 480) and label.dtype == np.uint8
    assert name == "0001TP_008550"
    assert label.max() <= 11


def test_class_metadata(camvid_root):
    ds = CamVid("val", root=camvid_root)
    assert ds.n_classes == 11 and ds.ignore_index == 11
    assert ds.class_names[3] == "Road"
    assert ds.palette.shape == (12, 3)
    assert tuple(ds.palette[4]) == (60, 40, 222)
    colour = ds.colorize(np.array([[3, 11]], np.uint8))
    assert colour.tolist() == [[[128, 64, 128], [0, 0, 0]]]


def test_class_frequencies_match_the_readme_counts(camvid_root):
    freq = CamVid("train", root=camvid_root).class_frequencies()
    expected = np.array(README_TRAIN_COUNTS) / sum(README_TRAIN_COUNTS)
    np.testing.assert_allclose(freq, expected, rtol=1e-12)


def test_resolution_and_subset(camvid_root):
    ds = CamVid("test", root=camvid_root, resolution=(90, 120), subset=5)
    assert len(ds) == 5
    image, label, _ = ds[4]
    assert image.shape == (90, 120, 3) and label.shape == (90, 120)
    assert ds.native_label(4).shape == (360, 480)
    # the subset is spread over the split, not its first images
    names = CamVid("test", root=camvid_root).names
    assert ds.names[-1] == names[-1] and ds.names[0] == names[0]
    # nearest-neighbour label resizing never invents a class value
    assert set(np.unique(label)) <= set(np.unique(ds.native_label(4)))


def test_evenly_spaced():
    assert evenly_spaced(10, None).tolist() == list(range(10))
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9]
    assert evenly_spaced(3, 10).tolist() == [0, 1, 2]


def test_works_with_torch_dataloader(camvid_root):
    ds = CamVid("test", root=camvid_root, resolution=(36, 48), subset=4)
    images, labels, names = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 36, 48, 3) and labels.shape == (4, 36, 48)
    assert list(names) == ds.names


def test_loading_and_scoring_do_not_import_torch():
    # The harness (datasets, metrics, report) must start without torch's import cost.
    code = "import sys, bench.datasets, bench.metrics, bench.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGBENCH_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    assert data_root(tmp_path / "x") == (tmp_path / "x").resolve()


def test_missing_root_names_the_file(tmp_path):
    with pytest.raises(SegbenchError, match=r"test\.txt.*not found"):
        CamVid("test", root=tmp_path)


def test_unknown_split_and_dataset(camvid_root):
    with pytest.raises(SegbenchError, match="no split 'dev'"):
        CamVid("dev", root=camvid_root)
    with pytest.raises(SegbenchError, match="unknown dataset 'kitti'"):
        load_dataset("kitti", "test")


def test_missing_image_file(camvid_copy):
    ds = CamVid("test", root=camvid_copy)
    ds.image_path(1).unlink()
    with pytest.raises(SegbenchError, match=rf"{ds.image_path(1)}: file not found"):
        ds[1]


def test_truncated_png(camvid_copy):
    ds = CamVid("test", root=camvid_copy)
    path = ds.image_path(0)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(SegbenchError, match=rf"{path}: not a readable PNG"):
        ds[0]


def test_not_a_png(camvid_copy):
    ds = CamVid("test", root=camvid_copy)
    ds.label_path(0).write_text("hello")
    with pytest.raises(SegbenchError, match="not a readable PNG"):
        ds[0]


def test_label_size_differs_from_image(camvid_copy):
    ds = CamVid("test", root=camvid_copy)
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(ds.label_path(2))
    with pytest.raises(SegbenchError, match=r"label is 100x100 but its image is 480x360"):
        ds[2]


def test_label_value_out_of_range(camvid_copy):
    ds = CamVid("test", root=camvid_copy)
    label = ds.native_label(0).copy()
    label[0, 0] = 40
    Image.fromarray(label).save(ds.label_path(0))
    with pytest.raises(SegbenchError, match=r"label values \[40\] are outside 0..10"):
        ds[0]


def test_colour_label_is_refused(camvid_copy):
    ds = CamVid("test", root=camvid_copy)
    Image.fromarray(np.zeros((360, 480, 3), np.uint8)).save(ds.label_path(0))
    with pytest.raises(SegbenchError, match="single-channel"):
        ds[0]


def test_split_line_outside_the_root(camvid_copy):
    list_file = camvid_copy / "camvid" / "test.txt"
    list_file.write_text("/SegNet/CamVid/../../etc/passwd /SegNet/CamVid/testannot/x.png\n")
    with pytest.raises(SegbenchError, match=r"test\.txt:1: .* points outside the dataset root"):
        CamVid("test", root=camvid_copy)


def test_malformed_split_line(camvid_copy):
    (camvid_copy / "camvid" / "test.txt").write_text("only_one_path.png\n")
    with pytest.raises(SegbenchError, match=r"test\.txt:1: expected 'IMAGE LABEL'"):
        CamVid("test", root=camvid_copy)


def test_synthetic_is_seeded_and_well_formed():
    a = Synthetic("train", n_images=3, size=(40, 60), seed=1)
    b = Synthetic("train", n_images=3, size=(40, 60), seed=1)
    c = Synthetic("test", n_images=3, size=(40, 60), seed=1)
    image, label, name = a[2]
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8 and label.shape == (40, 60)
    np.testing.assert_array_equal(image, b[2][0])
    assert not np.array_equal(image, c[2][0])  # splits are disjoint streams
    values = set(np.unique(np.concatenate([a[i][1].ravel() for i in range(3)])).tolist())
    assert a.ignore_index in values and values <= {0, 1, 2, 3, 4}
    assert len(values - {4}) >= 3
    assert a.class_frequencies().sum() == pytest.approx(1.0)
    assert name == "synthetic_train_0002"


def test_synthetic_resolution_and_bad_arguments():
    ds = Synthetic("val", n_images=2, size=(64, 64), resolution=(32, 32))
    assert ds[0][0].shape == (32, 32, 3) and ds.native_label(0).shape == (64, 64)
    with pytest.raises(SegbenchError):
        Synthetic("val", n_images=0)
    with pytest.raises(SegbenchError, match="resolution"):
        Synthetic("val", resolution=(0, 3))
