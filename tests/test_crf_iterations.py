"""The refinement-by-iterations study: curves scored by the runner's path, choice on select."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from baselines.class_prior import ClassPrior
from baselines.colour_forest import ColourForest
from baselines.crf_iterations import choose, iteration_curve, main
from baselines.dense_crf import crf_refine
from bench.datasets import Synthetic
from bench.metrics import ConfusionMatrix
from bench.runner import upsample_proba


def test_zero_iterations_is_the_method_alone_and_k_is_crf_refine_with_k_steps() -> None:
    train = Synthetic("train", n_images=4, size=(32, 40))
    test = Synthetic("test", n_images=3, size=(32, 40))
    method = ColourForest(n_estimators=3, random_state=0).fit(train)
    kernels = {"sxy_bilateral": 20.0, "srgb_bilateral": 13.0, "compat_bilateral": 5.0}
    curve = iteration_curve(method, test, kernels, max_iter=3)
    assert [r["n_iter"] for r in curve] == [0, 1, 2, 3] and curve[0]["crf_ms"] == 0.0
    for k in (0, 2):
        cm = ConfusionMatrix(test.n_classes, test.ignore_index, keep_per_image=False)
        for i in range(len(test)):
            image, gt = test.image(i), test.native_label(i)
            proba = method.predict_proba(image)
            if k:
                proba = crf_refine(image, proba, n_iter=k, **kernels)
            cm.update(np.argmax(upsample_proba(proba, gt.shape), axis=-1), gt)
        assert curve[k]["miou"] == pytest.approx(cm.scores()["miou"], abs=1e-12)
    # a constant method stays constant: the CRF cannot invent edges the unary lacks
    flat = iteration_curve(ClassPrior().fit(train), test, kernels, max_iter=1)
    assert flat[0]["miou"] == pytest.approx(flat[1]["miou"])


def test_choose_takes_the_best_miou_and_the_fewest_iterations_on_ties() -> None:
    curve = [{"n_iter": k, "miou": m} for k, m in enumerate([0.30, 0.35, 0.36, 0.36, 0.34])]
    assert choose(curve) == 2


def test_the_study_chooses_on_select_and_writes_its_report(tmp_path: Path, camvid_root) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "c", "profile": "quick", "dataset": "camvid", "data_root": str(camvid_root),
        "resolution": [48, 64], "train_subset": 6, "eval_subset": 3,
        "methods": [{"name": "colour_forest", "params": {"n_estimators": 3}}],
    }))  # fmt: skip
    out = tmp_path / "out"
    result = main(["--config", str(config), "--method", "colour_forest", "--max-iter", "2",
                   "--tune-images", "2", "--out-dir", str(out)])  # fmt: skip
    assert (
        [r["n_iter"] for r in result["select"]]
        == [0, 1, 2]
        == [r["n_iter"] for r in result["test"]]
    )
    assert result["chosen_n_iter"] == choose(result["select"])
    # not the default study: its own file names, the default study's are left alone
    assert not (out / "crf_iterations.md").exists()
    text = (out / "crf_iterations_colour_forest.md").read_text()
    assert f"| {result['chosen_n_iter']} (chosen) |" in text
    assert (out / "crf_iterations_colour_forest.png").stat().st_size > 0
