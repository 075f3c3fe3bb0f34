"""A user's folder as a dataset (``dataset: folder``): loading through the registry and a
config, every malformed folder named in one message, and a run scored as its labels imply."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bench.config import parse_config
from bench.datasets import FolderDataset, load_dataset, load_splits
from bench.datasets.folder import default_palette
from bench.errors import SegbenchError
from bench.runner import run_config

CLASSES = ["sky", "road", "car"]
VOID = 255
#: (split, stem, (H, W), format): two sizes, one portrait; PNG and lossy JPEG images.
ITEMS = [
    ("train", "a1", (12, 16), "png"),
    ("train", "a2", (12, 16), "jpg"),
    ("train", "b1", (10, 7), "png"),
    ("train", "b2", (10, 7), "jpg"),
    ("val", "v1", (12, 16), "png"),
    ("test", "t1", (12, 16), "png"),
    ("test", "t2", (10, 7), "jpg"),
]


def make_label(rng: np.random.Generator, size: tuple[int, int], split: str) -> np.ndarray:
    """Classes 0..2 and void; on train, sky (0) is the most frequent class by construction."""
    weights = [0.55, 0.2, 0.15, 0.1] if split == "train" else [0.3, 0.35, 0.25, 0.1]
    return rng.choice(np.array([0, 1, 2, VOID], np.uint8), size=size, p=weights)


@pytest.fixture()
def folder(tmp_path: Path) -> tuple[Path, dict]:
    """A data root holding the folder dataset ``mine``; returns (folder, {stem: (image, label)})."""
    root = tmp_path / "data" / "mine"
    for sub in ("images", "labels", "splits"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, stem, size, fmt in ITEMS:
        image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        label = make_label(rng, size, split)
        Image.fromarray(image).save(root / "images" / f"{stem}.{fmt}")
        Image.fromarray(label).save(root / "labels" / f"{stem}.png")
        arrays[stem] = (image, label)
    for split in ("train", "val", "test"):
        stems = [stem for s, stem, _, _ in ITEMS if s == split]
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    write_yaml(root, {"classes": CLASSES, "palette": [[0, 0, 255], [128, 128, 128], [255, 0, 0]]})
    # not images: skipped when the folder is indexed
    (root / "images" / "README.txt").write_text("photos of my street\n")
    (root / "images" / ".DS_Store").write_bytes(b"\0\1")
    return root, arrays


def write_yaml(root: Path, data: dict) -> None:
    (root / "dataset.yaml").write_text(yaml.safe_dump(data))


def raises_naming(path: Path, what: str):  # noqa: ANN201
    """pytest.raises for a SegbenchError whose message names ``path`` and then says ``what``."""
    return pytest.raises(SegbenchError, match=re.escape(str(path)) + ".*" + what)


# -- loading ---------------------------------------------------------------------------------------


def test_loads_through_the_registry(folder) -> None:
    root, arrays = folder
    ds = load_dataset("folder", "train", path=root)
    assert isinstance(ds, FolderDataset)
    assert ds.names == ["a1", "a2", "b1", "b2"]
    assert ds.class_names == tuple(CLASSES) and ds.n_classes == 3 and ds.ignore_index == VOID
    assert ds.groups == ["all"] * 4 and ds.block_length == 1
    for i, name in enumerate(ds.names):
        image, label, got_name = ds[i]
        expected_image, expected_label = arrays[name]
        assert got_name == name
        assert image.dtype == np.uint8 and image.shape == expected_image.shape
        if ds.image_path(i).suffix == ".png":  # JPEG is lossy: only the lossless ones exactly
            np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(label, expected_label)
    # the frequencies counted here from the arrays written, void left out
    counts = sum(np.bincount(arrays[n][1].ravel(), minlength=256)[:3] for n in ds.names)
    np.testing.assert_allclose(ds.class_frequencies(), counts / counts.sum())


def test_config_dataset_options_reach_the_folder(folder) -> None:
    root, _ = folder
    data_root = root.parent
    base = {"dataset": "folder", "methods": ["class_prior"], "split": "test"}
    # a relative path is taken under the config's data root, an absolute one as it is
    for options, extra in (
        ({"path": "mine"}, {"data_root": str(data_root)}),
        ({"path": str(root)}, {}),
    ):
        cfg = parse_config({**base, **extra, "dataset_options": options})
        train, val, test = load_splits(cfg)
        assert (len(train), len(val), len(test)) == (4, 1, 2)
        assert train.root == val.root == test.root == root.resolve()


def test_resolution_subset_and_palette(folder) -> None:
    root, arrays = folder
    ds = FolderDataset("train", path=root, resolution=(8, 8), subset=2)
    assert ds.names == ["a1", "b2"]  # spread over the list: first and last
    image, label, _ = ds[1]
    assert image.shape == (8, 8, 3) and label.shape == (8, 8)
    np.testing.assert_array_equal(ds.native_label(1), arrays["b2"][1])
    painted = ds.colorize(np.array([[0, 2, VOID]], np.uint8))
    assert painted.tolist() == [[[0, 0, 255], [255, 0, 0], [0, 0, 0]]]


def test_default_palette_is_voc_without_black(folder) -> None:
    root, _ = folder
    write_yaml(root, {"classes": CLASSES})
    ds = FolderDataset("val", path=root)
    # PASCAL VOC's colour map, indices 1..3 (its 0, black, stays void's colour)
    assert ds.palette.tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0]]
    big = default_palette(255)
    assert len({tuple(c) for c in big.tolist()}) == 255 and (big.sum(axis=1) > 0).all()
    assert big[3].tolist() == [0, 0, 128] and big[4].tolist() == [128, 0, 128]


def test_ignore_index_from_the_yaml(folder) -> None:
    root, _ = folder
    label = np.array([[0, 1], [2, 3]], np.uint8)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / "images" / "tiny.png")
    Image.fromarray(label).save(root / "labels" / "tiny.png")
    (root / "splits" / "tiny.txt").write_text("tiny\n")
    write_yaml(root, {"classes": CLASSES, "ignore_index": 3})
    ds = FolderDataset("tiny", path=root)
    assert ds.ignore_index == 3
    np.testing.assert_array_equal(ds.native_label(0), label)
    np.testing.assert_allclose(ds.class_frequencies(), [1 / 3] * 3)


# -- errors, each naming its file ------------------------------------------------------------------

BAD_YAML = [
    ("classes: [sky, road\n", "not valid YAML"),
    ("- sky\n- road\n", "must be a mapping"),
    ("clases: [sky]\n", "unknown key 'clases'"),
    ("palette: [[1, 2, 3]]\n", "'classes' must be a non-empty list"),
    ("classes: []\n", "'classes' must be a non-empty list"),
    ("classes: sky\n", "'classes' must be a non-empty list"),
    ("classes: [sky, no, car]\n", r"classes\[1\] must be a non-empty name, got False"),
    ("classes: [sky, 12]\n", r"classes\[1\] must be a non-empty name, got 12"),
    ("classes: [sky, sky]\n", "'classes' repeats 'sky'"),
    ("classes: [a, b, c]\npalette: [[1, 2, 3]]\n", r"one \[r, g, b\] per class \(3\), got 1"),
    ("classes: [a]\npalette: [1, 2, 3]\n", r"one \[r, g, b\] per class \(1\), got 3"),
    ("classes: [a]\npalette: red\n", r"per class \(1\), got 'red'"),
    ("classes: [a]\npalette: [[1, 2, 300]]\n", r"palette\[0\] must be \[r, g, b\] with integers"),
    ("classes: [a]\npalette: [[1, 2]]\n", r"palette\[0\] must be \[r, g, b\]"),
    ("classes: [a]\npalette: [[true, 2, 3]]\n", r"palette\[0\] must be \[r, g, b\]"),
    ("classes: [a]\nignore_index: void\n", "'ignore_index' must be an integer 0..255, got 'void'"),
    ("classes: [a]\nignore_index: true\n", "'ignore_index' must be an integer 0..255, got True"),
    ("classes: [a]\nignore_index: 256\n", "'ignore_index' must be an integer 0..255, got 256"),
    ("classes: [a]\nignore_index: -1\n", "'ignore_index' must be an integer 0..255, got -1"),
    ("classes: [a]\nignore_index: 2.0\n", "'ignore_index' must be an integer 0..255, got 2.0"),
    ("classes: [a, b, c]\nignore_index: 1\n", "'ignore_index' 1 is the index of class 'b'"),
    ("classes: [" + ", ".join(f"c{i}" for i in range(256)) + "]\n", "lists 256 names; at most"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_YAML)
def test_a_bad_dataset_yaml_is_named(folder, text, message) -> None:
    root, _ = folder
    (root / "dataset.yaml").write_text(text)
    with raises_naming(root / "dataset.yaml", message):
        FolderDataset("train", path=root)


def test_a_missing_dataset_yaml_is_named(folder) -> None:
    root, _ = folder
    (root / "dataset.yaml").unlink()
    with raises_naming(root / "dataset.yaml", "dataset.yaml not found"):
        load_dataset("folder", "train", path=root)


def test_the_folder_option_is_required_and_must_exist(folder, tmp_path) -> None:
    with pytest.raises(SegbenchError, match=r"needs the folder: dataset_options: \{path: "):
        load_dataset("folder", "train", root=tmp_path)
    with raises_naming(tmp_path / "data" / "elsewhere", "dataset folder not found"):
        load_dataset("folder", "train", root=tmp_path / "data", path="elsewhere")
    with pytest.raises(SegbenchError, match="'path' must be a folder name, got 3"):
        load_dataset("folder", "train", path=3)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["a1", "nope"], r"train.txt:2: 'nope' names a missing image"),
        (["a1", "a1"], r"train.txt:2: 'a1' is listed twice"),
        (["../labels/a1"], r"train.txt:1: '../labels/a1' is not an image name"),
        (["a1.png"], r"train.txt:1: 'a1.png' names a missing image"),
        (["", "  "], r"train.txt: the split list is empty"),
    ],
)
def test_a_bad_split_list_is_named(folder, lines, message) -> None:
    root, _ = folder
    (root / "splits" / "train.txt").write_text("\n".join(lines) + "\n")
    with raises_naming(root / "splits", message):
        FolderDataset("train", path=root)


def test_a_missing_split_is_named_with_the_known_ones(folder) -> None:
    root, _ = folder
    with raises_naming(root / "splits" / "valid.txt", "split list not found; .* test, train, val"):
        FolderDataset("valid", path=root)
    with raises_naming(root / "splits", "'../x' is not a split name"):
        FolderDataset("../x", path=root)


def test_an_image_without_its_label_is_named(folder) -> None:
    root, _ = folder
    # not in any split list: every image of the folder needs its label
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / "extra.jpg")
    with raises_naming(root / "images" / "extra.jpg", "image without a label"):
        FolderDataset("test", path=root)
    (root / "images" / "extra.jpg").unlink()
    # a listed image whose label is gone
    (root / "labels" / "t2.png").unlink()
    with raises_naming(root / "images" / "t2.jpg", re.escape(str(root / "labels" / "t2.png"))):
        FolderDataset("test", path=root)


def test_two_images_of_one_name_are_named(folder) -> None:
    root, _ = folder
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "images" / "a1.bmp")
    with raises_naming(root / "images", "two images named 'a1'"):
        FolderDataset("train", path=root)


def test_a_colour_label_is_named(folder) -> None:
    root, arrays = folder
    rgb = np.repeat(arrays["t1"][1][..., None], 3, axis=2)
    Image.fromarray(rgb).save(root / "labels" / "t1.png")
    with raises_naming(root / "labels" / "t1.png", "single-channel PNG .* mode 'RGB'"):
        FolderDataset("test", path=root)


def test_a_label_of_another_size_is_named(folder) -> None:
    root, _ = folder
    Image.fromarray(np.zeros((12, 15), np.uint8)).save(root / "labels" / "t1.png")
    with raises_naming(
        root / "labels" / "t1.png", r"label is 15x12 but its image t1.png is 16x12$"
    ):
        FolderDataset("test", path=root)
    # a label of the turned size: the likely cause (an EXIF rotation) is said
    Image.fromarray(np.zeros((16, 12), np.uint8)).save(root / "labels" / "t1.png")
    with raises_naming(root / "labels" / "t1.png", "16x12 .* EXIF orientation"):
        FolderDataset("test", path=root)


def test_an_unreadable_image_is_named(folder) -> None:
    root, _ = folder
    (root / "images" / "t2.jpg").write_bytes(b"not a jpeg at all")
    with raises_naming(root / "images" / "t2.jpg", "not a readable image"):
        FolderDataset("test", path=root)


def test_a_label_value_outside_the_classes_is_named_when_read(folder) -> None:
    root, arrays = folder
    label = arrays["t2"][1].copy()
    label[0, 0], label[1, 1] = 7, 3  # 3 = n_classes: not a class either
    Image.fromarray(label).save(root / "labels" / "t2.png")
    ds = FolderDataset("test", path=root)  # headers are fine: values are checked on reading
    ds.native_label(0)
    with raises_naming(root / "labels" / "t2.png", r"label values \[3, 7\] are outside 0..2"):
        ds.native_label(1)
    with raises_naming(root / "labels" / "t2.png", "not the ignore index 255"):
        ds[1]


# -- end to end ------------------------------------------------------------------------------------


def test_run_config_scores_class_prior_as_the_labels_imply(folder, tmp_path) -> None:
    root, arrays = folder
    cfg = parse_config(
        {
            "name": "folder_e2e",
            "dataset": "folder",
            "data_root": str(root.parent),
            "dataset_options": {"path": "mine"},
            "split": "test",
            "val_split": None,
            "bootstrap": 20,
            "methods": ["class_prior"],
        }
    )
    (row,) = run_config(cfg, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    assert row["status"] == "ok", row.get("error")
    assert row["dataset"] == "folder" and row["class_names"] == CLASSES
    assert (row["n_train"], row["n_images"]) == (4, 2)

    # The class prior predicts the most frequent training class (sky, by construction) at every
    # pixel: IoU of sky = its share of the labelled test pixels, 0 for the others, which are
    # present; accuracy per class 1, 0, 0.
    train = np.concatenate([arrays[s][1].ravel() for s in ("a1", "a2", "b1", "b2")])
    assert np.bincount(train, minlength=256)[:3].argmax() == 0
    gt = np.concatenate([arrays[s][1].ravel() for s in ("t1", "t2")])
    gt = gt[gt != VOID]
    share = [(gt == c).mean() for c in range(3)]
    assert min(share) > 0
    assert row["per_class_iou"] == pytest.approx([share[0], 0.0, 0.0])
    assert row["miou"] == pytest.approx(share[0] / 3)
    assert row["global_acc"] == pytest.approx(share[0])
    assert row["mean_acc"] == pytest.approx(1 / 3)
    # each prediction is written at its own image's size, all sky
    pred_dir = tmp_path / "runs" / "pred" / "quick" / "folder_e2e" / "class_prior.seed0"
    for stem in ("t1", "t2"):
        pred = np.array(Image.open(pred_dir / f"{stem}.png"))
        assert pred.shape == arrays[stem][1].shape and not pred.any()
