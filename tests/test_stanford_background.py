"""Stanford Background: metadata, variable-size items, folds, bad input, the generic hooks."""

import hashlib
import inspect
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

import bench
from bench.cli import main
from bench.config import parse_config
from bench.datasets import DATASETS, StanfordBackground, Synthetic, load_dataset, load_splits
from bench.errors import SegbenchError
from bench.report.figures import _load_dataset

# (H, W) of images of seven of the 51 sizes, portrait ones included (from horizons.txt).
SIZES = {
    "0000047": (240, 320),
    "0100855": (320, 240),
    "0003463": (213, 320),
    "5000176": (320, 213),
    "8005616": (137, 320),
    "2000028": (320, 320),
    "0104194": (320, 291),
}
# The README's class table, in index order.
README_CLASSES = (
    "sky", "tree", "road", "grass", "water", "building", "mountain", "foreground object",
)  # fmt: skip
COPIED = ["0000047", "0100855", "8005616"]  # three sizes, one portrait


@pytest.fixture()
def stanford_copy(tmp_path: Path, stanford_root: Path) -> Path:
    """A writable data root with three images, their labels, a hand-written fold-0 test list
    and a SHA256SUMS of those files. Tests corrupt this copy, never the shared one."""
    src = stanford_root / "stanford_background"
    dst = tmp_path / "data" / "stanford_background"
    for folder in ("images", "labels", "splits"):
        (dst / folder).mkdir(parents=True)
    for name in COPIED:
        shutil.copy(src / "images" / f"{name}.jpg", dst / "images")
        shutil.copy(src / "labels" / f"{name}.png", dst / "labels")
    (dst / "splits" / "fold0_test.txt").write_text("0000047\n0100855\n8005616\n")
    files = sorted(p for p in dst.rglob("*") if p.is_file())
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(dst)}" for p in files]
    (dst / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return tmp_path / "data"


def _split_file(root: Path, fold: int, split: str) -> Path:
    return root / "stanford_background" / "splits" / f"fold{fold}_{split}.txt"


# -- the real data --------------------------------------------------------------------------------


def test_class_metadata(stanford_root):
    ds = StanfordBackground("test", root=stanford_root, subset=1)
    assert ds.class_names == README_CLASSES and ds.n_classes == 8
    assert ds.ignore_index == 255 and ds.block_length == 1
    assert ds.palette.shape == (8, 3) and ds.palette.dtype == np.uint8
    colours = {tuple(c) for c in ds.palette.tolist()}
    assert len(colours) == 8 and (0, 0, 0) not in colours  # void alone paints black
    painted = ds.colorize(np.array([[2, 255]], np.uint8))
    assert painted.tolist() == [[ds.palette[2].tolist(), [0, 0, 0]]]
    assert DATASETS["stanford_background"] is StanfordBackground


def test_images_of_distinct_sizes_load_with_labels_of_their_size(stanford_root):
    folder = stanford_root / "stanford_background"
    # fold 0's test and trainval together hold every image once
    splits = [StanfordBackground(s, root=stanford_root) for s in ("test", "trainval")]
    for name, size in SIZES.items():
        ds = next(d for d in splits if name in d.names)
        i = ds.names.index(name)
        image, label, got_name = ds[i]
        assert got_name == name
        assert Image.open(folder / "images" / f"{name}.jpg").size[::-1] == size  # PIL is (W, H)
        assert image.shape == (*size, 3) and image.dtype == np.uint8
        assert label.shape == size and label.dtype == np.uint8
        assert ds.native_label(i).shape == size
        np.testing.assert_array_equal(
            label, np.array(Image.open(folder / "labels" / f"{name}.png"))
        )
        assert set(np.unique(label).tolist()) <= {*range(8), 255}


def test_resolution_resizes_image_and_label_but_not_the_native_label(stanford_root):
    full = StanfordBackground("trainval", root=stanford_root)
    ds = StanfordBackground("trainval", root=stanford_root, resolution=(60, 80))
    for name in ("0100855", "8005616"):  # portrait, and a very flat landscape
        i = ds.names.index(name)
        image, label, _ = ds[i]
        assert image.shape == (60, 80, 3) and label.shape == (60, 80)
        assert ds.image(i).shape == (60, 80, 3)
        native = ds.native_label(i)
        assert native.shape == SIZES[name]
        np.testing.assert_array_equal(native, full.native_label(i))
        # nearest-neighbour label resizing never invents a class value
        assert set(np.unique(label).tolist()) <= set(np.unique(native).tolist())


def test_folds_follow_the_readme_recipe_and_partition_the_images(stanford_root):
    folder = stanford_root / "stanford_background"
    all_names = sorted(p.stem for p in (folder / "images").glob("*.jpg"))
    assert len(all_names) == 715
    # The README: one permutation of the sorted names, seed 2009; fold k tests positions
    # 143k..143k+142, the first 57 of the rest (permutation order) are val.
    order = [all_names[i] for i in np.random.default_rng(2009).permutation(715)]
    tested = []
    for k in range(5):
        names = {
            s: StanfordBackground(s, root=stanford_root, fold=k).names
            for s in ("train", "val", "trainval", "test")
        }
        assert [len(names[s]) for s in ("train", "val", "trainval", "test")] == [515, 57, 572, 143]
        assert set(names["test"]) == set(order[143 * k : 143 * k + 143])
        rest = order[: 143 * k] + order[143 * k + 143 :]
        assert set(names["val"]) == set(rest[:57]) and set(names["train"]) == set(rest[57:])
        assert set(names["train"]) | set(names["val"]) == set(names["trainval"])
        assert not set(names["train"]) & set(names["val"])
        assert not set(names["trainval"]) & set(names["test"])
        assert sorted(names["trainval"] + names["test"]) == all_names
        tested += names["test"]
    assert sorted(tested) == all_names  # every image is tested exactly once over the folds


def test_subset_is_spread_over_the_split(stanford_root):
    full = StanfordBackground("test", root=stanford_root, fold=3).names
    ds = StanfordBackground("test", root=stanford_root, fold=3, subset=5)
    assert len(ds) == 5 and ds.names[0] == full[0] and ds.names[-1] == full[-1]
    assert set(ds.names) <= set(full)
    assert repr(ds) == "StanfordBackground(split='test', n=5, resolution=native, fold=3)"


def test_class_frequencies_count_the_labels(stanford_root):
    ds = StanfordBackground("val", root=stanford_root, fold=1, subset=6)
    counts = np.zeros(256, np.int64)
    for name in ds.names:
        label = np.array(Image.open(ds.root / "labels" / f"{name}.png"))
        counts += np.bincount(label.ravel(), minlength=256)
    expected = counts[:8] / counts[:8].sum()  # void (255) is not a class
    np.testing.assert_allclose(ds.class_frequencies(), expected, rtol=1e-12)


def test_load_splits_passes_fold_root_and_subsets(stanford_root):
    cfg = parse_config(
        {
            "dataset": "stanford_background",
            "dataset_options": {"fold": 2},
            "data_root": str(stanford_root),
            "train_subset": 6,
            "eval_subset": 4,
            "resolution": [48, 64],
            "methods": ["class_prior"],
        }
    )
    train, val, test = load_splits(cfg)
    fold2 = {
        s: set(StanfordBackground(s, root=stanford_root, fold=2).names)
        for s in ("train", "val", "test")
    }
    assert len(train) == 6 and set(train.names) <= fold2["train"]
    assert len(val) == 4 and set(val.names) <= fold2["val"]
    assert len(test) == 4 and set(test.names) <= fold2["test"]
    assert test.fold == 2 and test.resolution == (48, 64)
    assert test[0][0].shape == (48, 64, 3)


def test_every_dataset_takes_the_generic_keywords(tmp_path):
    for name, cls in DATASETS.items():
        params = inspect.signature(cls).parameters
        assert {"split", "root", "resolution", "subset"} <= set(params), name
    # synthetic has no files: it takes a root and ignores it; a subset is its first images
    ds = load_dataset("synthetic", "test", root=tmp_path / "nowhere", subset=3, size=(32, 32))
    ref = Synthetic("test", n_images=5, size=(32, 32))
    assert ds.names == ref.names[:3]
    np.testing.assert_array_equal(ds[2][0], ref[2][0])


def test_report_loads_the_split_the_runner_scored(stanford_copy, tmp_path):
    group = SimpleNamespace(
        folder=tmp_path / "group", dataset="stanford_background", split="test",
        profile="quick", config="c",
    )  # fmt: skip
    group.folder.mkdir()
    config = {
        "dataset": "stanford_background",
        "data_root": str(stanford_copy),
        "dataset_options": {"fold": 0},
        "eval_subset": 2,
        "split": "test",
    }
    (group.folder / "config.yaml").write_text(yaml.safe_dump(config))
    ds = _load_dataset(group)
    assert isinstance(ds, StanfordBackground) and ds.names == ["0000047", "8005616"]


# -- bad input, on a small copy -------------------------------------------------------------------


def test_missing_folder_names_it(tmp_path):
    folder = tmp_path / "stanford_background"
    with pytest.raises(SegbenchError, match=rf"{re.escape(str(folder))}: Stanford Background not"):
        StanfordBackground("test", root=tmp_path)


def test_missing_split_list_names_it(stanford_copy):
    with pytest.raises(SegbenchError, match=r"fold1_test\.txt: Stanford Background split list"):
        StanfordBackground("test", root=stanford_copy, fold=1)


@pytest.mark.parametrize("folder, suffix", [("images", "jpg"), ("labels", "png")])
def test_split_list_naming_a_missing_file(stanford_copy, folder, suffix):
    path = stanford_copy / "stanford_background" / folder / f"0100855.{suffix}"
    path.unlink()
    with pytest.raises(
        SegbenchError,
        match=rf"fold0_test\.txt:2: '0100855' names a missing file {re.escape(str(path))}",
    ):
        StanfordBackground("test", root=stanford_copy)


@pytest.mark.parametrize(
    "text, message",
    [
        ("0000047\n../labels/0000047\n", r"fold0_test\.txt:2: '../labels/0000047' is not an image"),
        ("0000047\n0000047\n", r"fold0_test\.txt:2: '0000047' is listed twice"),
        ("\n\n", r"fold0_test\.txt: the split list is empty"),
    ],
)
def test_bad_split_list(stanford_copy, text, message):
    _split_file(stanford_copy, 0, "test").write_text(text)
    with pytest.raises(SegbenchError, match=message):
        StanfordBackground("test", root=stanford_copy)


def test_label_size_differs_from_image(stanford_copy):
    ds = StanfordBackground("test", root=stanford_copy)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(ds.label_path(1))
    with pytest.raises(
        SegbenchError,
        match=rf"{re.escape(str(ds.label_path(1)))}: label is 12x10 but its image is 240x320",
    ):
        ds[1]


def test_label_value_neither_class_nor_void(stanford_copy):
    ds = StanfordBackground("test", root=stanford_copy)
    label = ds.native_label(0)
    label[0, :2] = [8, 254]
    Image.fromarray(label).save(ds.label_path(0))
    with pytest.raises(
        SegbenchError,
        match=rf"{re.escape(str(ds.label_path(0)))}: label values \[8, 254\] are outside 0..7 and "
        "are not the ignore index 255",
    ):
        ds.native_label(0)


def test_truncated_jpeg_names_the_file(stanford_copy):
    ds = StanfordBackground("test", root=stanford_copy)
    path = ds.image_path(2)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(SegbenchError, match=rf"{re.escape(str(path))}: not a readable JPG image"):
        ds[2]


@pytest.mark.parametrize("fold", [-1, 5, True, "2", 1.0])
def test_fold_outside_0_to_4(stanford_copy, fold):
    with pytest.raises(SegbenchError, match="fold must be"):
        StanfordBackground("test", root=stanford_copy, fold=fold)


def test_unknown_split_or_option(stanford_copy):
    with pytest.raises(SegbenchError, match="no split 'dev'"):
        StanfordBackground("dev", root=stanford_copy)
    with pytest.raises(SegbenchError, match="stanford_background.*'folds'"):
        load_dataset("stanford_background", "test", root=stanford_copy, folds=1)


# -- the command line -----------------------------------------------------------------------------


def test_data_check_verifies_every_file(stanford_copy, capsys):
    args = ["data", "check", "stanford_background", "--data-root", str(stanford_copy)]
    assert main(args) == 0
    assert "all 7 files match their SHA-256" in capsys.readouterr().out
    image = stanford_copy / "stanford_background" / "images" / "8005616.jpg"
    image.write_bytes(image.read_bytes()[:-10])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{image}: SHA-256 differs" in err and "1 of 7 files fail verification" in err
    (stanford_copy / "stanford_background" / "SHA256SUMS").unlink()
    assert main(args) == 2
    assert "SHA256SUMS: manifest not found" in capsys.readouterr().err


def test_data_ensure_verifies_and_downloads_only_what_is_missing(stanford_copy, capsys):
    # The download itself: tests/test_stanford_download.py (a server on 127.0.0.1).
    root = ["--data-root", str(stanford_copy)]
    assert main(["data", "check", "stanford_background", *root]) == 0
    assert "all 7 files match" in capsys.readouterr().out
    (stanford_copy / "stanford_background" / "labels" / "0000047.png").unlink()
    assert main(["data", "check", "stanford_background", *root]) == 2
    assert "labels/0000047.png: missing" in capsys.readouterr().err
    # a missing file makes ensure fetch the archive: here from a closed port, one message
    closed = ["--url", "http://127.0.0.1:9/iccv09Data.tar.gz"]
    assert main(["data", "ensure", "stanford_background", *root, *closed]) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9/iccv09Data.tar.gz: download interrupted" in err
    assert "Traceback" not in err
    assert main(["data", "check", "synthetic"]) == 2
    assert "synthetic is generated" in capsys.readouterr().err


def test_evaluate_scores_variable_size_predictions(stanford_copy, tmp_path, capsys):
    ds = StanfordBackground("test", root=stanford_copy)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for i, name in enumerate(ds.names):
        label = ds.native_label(i)
        Image.fromarray(np.where(label == 255, 0, label).astype(np.uint8)).save(
            pred_dir / f"{name}.png"
        )
    args = ["evaluate", "--pred-dir", str(pred_dir), "--dataset", "stanford_background"]
    assert main([*args, "--data-root", str(stanford_copy)]) == 0
    assert re.search(r"global acc\s+100\.00 %", capsys.readouterr().out)


def test_folds_make_one_row_per_fold_and_the_report_summarises_them(stanford_root, tmp_path):
    from bench.report import write_report
    from bench.runner import run_config

    data = {
        "name": "cv", "profile": "quick", "dataset": "stanford_background",
        "data_root": str(stanford_root), "folds": [0, 1], "train_subset": 6, "eval_subset": 4,
        "bootstrap": 20, "sample_images": 1, "methods": ["class_prior"],
    }  # fmt: skip
    dirs = {"results_dir": tmp_path / "results", "runs_dir": tmp_path / "runs"}
    rows = run_config(parse_config(data), **dirs)
    assert [(r["fold"], r["seed"]) for r in rows] == [(0, 0), (1, 0)]
    folder = dirs["results_dir"] / "rows" / "quick" / "cv"
    assert (folder / "class_prior.fold1.seed0.json").is_file()
    assert (folder / "class_prior.fold1.seed0.cm.npz").is_file()
    # the folds score other test images: other rows, other fingerprints
    assert rows[0]["fingerprint"] != rows[1]["fingerprint"]
    assert rows[0]["miou"] != rows[1]["miou"]
    again = run_config(parse_config(data), **dirs)  # resumes: both rows done before
    assert [r["fingerprint"] for r in again] == [r["fingerprint"] for r in rows]
    table = write_report(dirs["results_dir"])
    assert sorted(table["fold"].tolist()) == [0, 1]
    readme = (dirs["results_dir"] / "README.md").read_text()
    mean = 100 * (rows[0]["miou"] + rows[1]["miou"]) / 2
    assert f"| class_prior | 2 x 1 | {mean:.2f} ± " in readme
    # the folds table: pixel and class accuracy, mean ± sd over the two folds
    acc = [100 * r["global_acc"] for r in rows]
    cls = [100 * r["mean_acc"] for r in rows]
    line = next(ln for ln in readme.splitlines() if ln.startswith("| class_prior | 2 x 1 | ") and
                ln.count("±") == 3)  # fmt: skip
    assert f"| {np.mean(acc):.2f} ± {np.std(acc, ddof=1):.2f} |" in line
    assert f"| {np.mean(cls):.2f} ± {np.std(cls, ddof=1):.2f} |" in line
    # the published table beside it, every row of the shipped file, marked as not run here
    published = yaml.safe_load(
        (
            Path(bench.__file__).parent / "datasets" / "published" / "stanford_background.yaml"
        ).read_text()
    )["rows"]
    assert "### Published results (not run here; folds differ)" in readme
    for row in published:
        assert f"| {row['method']} | {row['citation']} |" in readme
    assert "| Recursive neural network | Socher" in readme and "| 78.1 | - |" in readme


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"folds": []}, "'folds' must be a non-empty list"),
        ({"folds": [True]}, "'folds' must be a non-empty list"),
        ({"folds": [1, 1]}, "'folds' must be a non-empty list"),
        ({"folds": [0], "dataset_options": {"fold": 1}}, "either 'folds'"),
    ],
)
def test_bad_folds_are_named(extra, match):
    with pytest.raises(SegbenchError, match=match):
        parse_config({"dataset": "stanford_background", "methods": ["class_prior"], **extra})


def test_folds_on_a_dataset_without_folds_are_refused_before_any_work(tmp_path):
    from bench.runner import run_config

    cfg = parse_config(
        {"dataset": "synthetic", "folds": [0, 1], "methods": ["class_prior"]}, source="x.yaml"
    )
    with pytest.raises(SegbenchError, match="x.yaml: 'folds' given, but dataset 'synthetic'"):
        run_config(cfg, results_dir=tmp_path / "r", runs_dir=tmp_path / "runs")
    assert not list((tmp_path / "r").rglob("*.json"))
