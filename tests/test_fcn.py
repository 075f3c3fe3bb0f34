"""The FCN method: architectures, the segbench interface, learning the synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.datasets import Synthetic
from bench.metrics import ConfusionMatrix
from deep.fcn import FCN, build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("upsampling", ["bilinear", "max_unpool", "transposed3"])
def test_architectures_keep_the_input_size_of_any_image(arch: str, upsampling: str) -> None:
    net = build_network(arch, upsampling, n_classes=5, width=4).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 45, 70) * 255)  # not a multiple of 32: padded inside
    assert out.shape == (2, 5, 45, 70)


@pytest.mark.parametrize(
    "first,second",
    [
        # the skips' score layers start at zero, so FCN-8s starts as FCN-32s
        (("fcn32s", "bilinear"), ("fcn8s", "bilinear")),
        # the same layer written two ways: the upsampling study reads their test gap as
        # training noise, which relies on this
        (("fcn8s", "transposed3"), ("fcn8s", "bed_of_nails_conv")),
    ],
)
def test_networks_that_must_start_as_the_same_function(first, second) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    a = build_network(*first, 5, width=4).eval()
    torch.manual_seed(0)
    b = build_network(*second, 5, width=4).eval()
    x = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def test_fcn_learns_the_synthetic_dataset_well_above_chance(tmp_path) -> None:  # noqa: ANN001
    train = Synthetic("train", n_images=16, size=(48, 64))
    val = Synthetic("val", n_images=4, size=(48, 64))
    test = Synthetic("test", n_images=6, size=(48, 64))
    method = FCN(
        arch="fcn8s", width=8, epochs=30, batch_size=4, lr=1e-2, crop=[48, 48], device="cpu",
        checkpoint_dir=str(tmp_path),
    ).fit(train, val)  # fmt: skip
    cm = ConfusionMatrix(test.n_classes, test.ignore_index)
    for image, label, _ in test:  # shape, dtype and sums: tests/test_contract.py
        cm.update(method.predict(image), label)
    s = cm.scores()
    # chance on four classes: class accuracy 0.25, mIoU about 0.15-0.2 (uniform guessing or the
    # majority class); the tiny net reaches about 0.8 and 0.6
    assert s["mean_acc"] > 0.6, s
    assert s["miou"] > 0.4, s
    assert len(method.history_) == 30 and method.best_epoch_ >= 0
    assert (method.checkpoint_dir_ / "best.pt").is_file()


def test_a_second_fit_with_the_same_parameters_loads_instead_of_retraining(tmp_path) -> None:  # noqa: ANN001
    train = Synthetic("train", n_images=4, size=(32, 32))
    params = dict(arch="fcn16s", width=4, epochs=2, batch_size=2, device="cpu",
                  checkpoint_dir=str(tmp_path))  # fmt: skip
    first = FCN(**params).fit(train)
    second = FCN(**params).fit(train)
    assert second.checkpoint_dir_ == first.checkpoint_dir_
    assert second.history_ == first.history_  # resumed after the last epoch: nothing retrained
    image = train.image(0)
    np.testing.assert_array_equal(first.predict_proba(image), second.predict_proba(image))
    other = FCN(**{**params, "upsampling": "nearest"})
    assert other.checkpoint_folder(train) != first.checkpoint_dir_
    assert first.checkpoint_dir_.name.startswith("fcn-")


def test_training_is_deterministic_and_the_seed_reaches_it(tmp_path) -> None:  # noqa: ANN001
    train = Synthetic("train", n_images=4, size=(32, 32))
    val = Synthetic("val", n_images=2, size=(32, 32))
    params = dict(arch="fcn8s", width=4, epochs=2, batch_size=2, device="cpu", n_threads=1)
    a = FCN(**params, checkpoint_dir=str(tmp_path / "a")).fit(train, val)
    assert a.fit_summary()["checkpoint"] == {
        "reused": False,
        "train_seconds": a.train_seconds_,
        "processes": 1,
        "device": "cpu",
    }
    reused = FCN(**params, checkpoint_dir=str(tmp_path / "a")).fit(train, val)
    assert reused.fit_summary()["checkpoint"]["reused"] is True
    assert reused.fit_summary()["checkpoint"]["train_seconds"] == a.train_seconds_
    b = FCN(**params).fit(train, val)  # trained again from scratch (a temporary folder), same seed
    image = train.image(0)
    np.testing.assert_array_equal(a.predict_proba(image), b.predict_proba(image))
    c = FCN(**params, random_state=1).fit(train, val)
    assert not np.array_equal(a.predict_proba(image), c.predict_proba(image))
    summary = a.fit_summary()
    assert np.isfinite(summary["checkerboard"]) and len(summary["checkerboard_window"]) == 32
    assert summary["precision"] in ("bf16", "fp32")


def test_resume_false_retrains_and_is_not_recorded_as_reused(tmp_path) -> None:  # noqa: ANN001
    train = Synthetic("train", n_images=4, size=(32, 32))
    params = dict(arch="fcn32s", width=4, epochs=1, batch_size=2, device="cpu", n_threads=1,
                  checkpoint_dir=str(tmp_path))  # fmt: skip
    first = FCN(**params).fit(train)
    again = FCN(**params, resume=False).fit(train)
    assert again.checkpoint_dir_ == first.checkpoint_dir_
    assert again.fit_summary()["checkpoint"]["reused"] is False
    assert again.train_seconds_ != first.train_seconds_  # it really trained again


def test_class_weight_changes_the_weights_and_bad_values_are_named() -> None:
    train = Synthetic("train", n_images=4, size=(32, 32))
    params = dict(arch="fcn32s", width=4, epochs=1, batch_size=2, device="cpu", n_threads=1)
    a = FCN(**params, checkpoint_dir="x").checkpoint_folder(train)
    b = FCN(**params, checkpoint_dir="x", class_weight="none").checkpoint_folder(train)
    assert a != b
    with pytest.raises(ValueError, match="class_weight must be one of"):
        FCN(**params, class_weight="balanced").fit(train)


def test_a_torch_upgrade_in_the_lock_file_changes_the_checkpoint_folder(monkeypatch) -> None:
    from bench import provenance

    train = Synthetic("train", n_images=4, size=(32, 32))
    method = FCN(arch="fcn32s", width=4, epochs=1, device="cpu", checkpoint_dir="x")
    before = method.checkpoint_folder(train)
    lock = provenance.LOCK_FILE.read_text()
    torch_pin = next(line for line in lock.splitlines() if line.startswith("torch=="))
    real = provenance.dependency_pins
    monkeypatch.setattr(
        "deep.checkpoints.dependency_pins",
        lambda *m: real(*m, lock_text=lock.replace(torch_pin, "torch==99.0.0")),
    )
    assert method.checkpoint_folder(train) != before
