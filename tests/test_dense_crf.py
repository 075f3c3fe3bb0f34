import json
import zlib

import numpy as np
import pytest

from baselines.colour_forest import ColourForest
from baselines.dense_crf import DenseCRF, crf_refine
from bench.config import parse_config
from bench.datasets import Synthetic
from bench.metrics import ConfusionMatrix
from bench.runner import run_config


def miou(pred, label, ds):
    cm = ConfusionMatrix(ds.n_classes, ds.ignore_index)
    cm.update(pred, label)
    return cm.scores()["miou"]


def noisy_proba(label, n_classes, rng, flip=0.35):
    """One-hot of the truth, with a random wrong class winning on ``flip`` of the pixels."""
    truth = np.where(label < n_classes, label, 0)
    wrong = (truth + rng.integers(1, n_classes, truth.shape)) % n_classes
    winner = np.where(rng.random(truth.shape) < flip, wrong, truth)
    proba = np.full((*truth.shape, n_classes), 0.4 / (n_classes - 1), np.float32)
    np.put_along_axis(proba, winner[..., None], 0.6, axis=-1)
    return proba


class NoisyOracle:
    """A 'method' whose probabilities are the (noisy) truth of the synthetic images."""

    def __init__(self, ds, flip=0.35):
        self.ds, self.flip = ds, flip
        self.lookup = {ds.image(i).tobytes(): ds.native_label(i) for i in range(len(ds))}

    def predict_proba(self, image):
        label = self.lookup[image.tobytes()]
        rng = np.random.default_rng(zlib.crc32(image.tobytes()))
        return noisy_proba(label, self.ds.n_classes, rng, self.flip)


def test_crf_cleans_a_noisy_probability_map():
    ds = Synthetic("test", n_images=1, size=(64, 80))
    image, label, _ = ds[0]
    proba = noisy_proba(label, ds.n_classes, np.random.default_rng(0))
    before = miou(proba.argmax(-1), label, ds)
    refined = crf_refine(image, proba, sxy_bilateral=10, srgb_bilateral=20, compat_bilateral=5)
    after = miou(refined.argmax(-1), label, ds)
    assert refined.shape == proba.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(-1), 1.0, rtol=1e-5)
    assert before < 0.6 and after > before + 0.2


def test_crf_accepts_non_contiguous_and_hard_zero_input():
    ds = Synthetic("test", n_images=1, size=(32, 40))
    image, label, _ = ds[0]
    proba = np.eye(ds.n_classes, dtype=np.float64)[np.where(label < 4, label, 0)]
    view = np.asfortranarray(proba)  # not C-contiguous, not float32, exact zeros
    out = crf_refine(np.asfortranarray(image), view, n_iter=2)
    assert np.isfinite(out).all() and (out.argmax(-1) == proba.argmax(-1)).mean() > 0.95
    with pytest.raises(ValueError, match="image is"):
        crf_refine(image[:-1], proba)


def test_tuning_uses_val_and_records_the_search():
    val = Synthetic("val", n_images=3, size=(48, 64))
    grid = {"compat_bilateral": [0.0, 5.0], "srgb_bilateral": [20.0]}
    stage = DenseCRF(NoisyOracle(val), prefit=True, tune_images=3, tune_grid=grid)
    stage.fit(None, val_dataset=val)
    assert len(stage.search_results_) == 3 and stage.search_results_[0]["crf"] is False
    # the bilateral kernel helps on noisy input: weight 5 must beat weight 0 and no CRF
    assert stage.best_params_["compat_bilateral"] == 5.0
    assert stage.best_score_ > stage.base_score_ + 0.1
    image = val.image(0)
    proba = stage.predict_proba(image)
    assert miou(proba.argmax(-1), val.native_label(0), val) > stage.base_score_
    # random search draws the asked number of settings
    stage = DenseCRF(NoisyOracle(val), prefit=True, tune_images=1, tune_candidates=2)
    assert len(stage.fit(None, val_dataset=val).search_results_) == 3
    # no val split: defaults kept, no search
    untuned = DenseCRF(NoisyOracle(val), prefit=True, sxy_bilateral=7.0).fit(None)
    assert untuned.best_params_["sxy_bilateral"] == 7.0 and untuned.search_results_ == []
    with pytest.raises(ValueError, match="not CRF parameters"):
        DenseCRF(NoisyOracle(val), prefit=True, tune_grid={"foo": [1]}).fit(None, val)


def test_fits_its_estimator_unless_prefit():
    train = Synthetic("train", n_images=4, size=(48, 64))
    stage = DenseCRF(ColourForest(n_estimators=3, pixels_per_image=200, n_jobs=1), tune=False)
    stage.fit(train)
    assert hasattr(stage.estimator, "forest_")
    proba = stage.predict_proba(train.image(0))
    assert proba.shape == (48, 64, 4)
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="needs an estimator"):
        DenseCRF().fit(train)


def test_runner_adds_a_crf_row(tmp_path):
    cfg = parse_config(
        {
            "dataset": "synthetic",
            "dataset_options": {"size": [48, 64]},
            "train_subset": 6,
            "eval_subset": 3,
            "bootstrap": 20,
            "methods": [
                {
                    "name": "colour_forest",
                    "params": {"n_estimators": 5, "pixels_per_image": 300, "n_jobs": 1},
                    "crf": {"tune_images": 2, "tune_grid": {"compat_bilateral": [3, 10]}},
                }
            ],
        },
        default_name="crf_test",
    )
    rows = run_config(cfg, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert [r["method"] for r in rows] == ["colour_forest", "colour_forest+crf"]
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    base, crf = rows
    assert crf["crf_of"] == "colour_forest" and crf["fit_s"] >= base["fit_s"]
    stored = json.loads(
        (tmp_path / "results/rows/quick/crf_test/colour_forest+crf.seed0.json").read_text()
    )
    assert stored["miou"] == crf["miou"]
    # colour alone is speckled on textured shapes: the CRF's smoothing must pay off
    assert crf["miou"] > base["miou"]
