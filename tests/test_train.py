"""Training loop: class weights, augmentation, checkpoints and exact resume after a kill."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.datasets import Synthetic
from deep.fcn import build_network
from deep.train import (
    ArrayData,
    TrainConfig,
    augment,
    class_weights,
    cpu_has_bf16,
    load_arrays,
    load_checkpoint,
    median_frequency_weights,
    train,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_median_frequency_weights_ignore_void_and_absent_classes() -> None:
    labels = torch.tensor(
        [[[0, 0, 0, 1]], [[0, 0, 9, 9]], [[2, 2, 2, 2]]], dtype=torch.uint8
    )  # 9 = void; class 3 never appears
    w = median_frequency_weights(labels, 4)
    # freq: class 0 = 5 px / 6 labelled px of the images holding it; 1 = 1/4; 2 = 4/4
    freq = np.array([5 / 6, 1 / 4, 1.0])
    np.testing.assert_allclose(w[:3].numpy(), np.median(freq) / freq, rtol=1e-6)
    assert w[3] == 0


def test_class_weights_sqrt_halves_the_boost_and_none_is_unweighted() -> None:
    labels = torch.tensor([[[0, 0, 0, 1]], [[2, 2, 2, 2]]], dtype=torch.uint8)
    full = median_frequency_weights(labels, 3)
    torch.testing.assert_close(class_weights("median_frequency", labels, 3), full)
    torch.testing.assert_close(class_weights("sqrt_median_frequency", labels, 3), full.sqrt())
    assert class_weights("none", labels, 3) is None
    with pytest.raises(ValueError, match="class_weight must be one of"):
        class_weights("inverse", labels, 3)


def test_a_checkpoint_of_another_network_is_named_not_a_torch_traceback(tmp_path) -> None:  # noqa: ANN001
    data = load_arrays(Synthetic("train", n_images=4, size=(32, 32)))
    cfg = TrainConfig(epochs=1, batch_size=2, precision="fp32")
    mean, std = torch.zeros(3), torch.ones(3)
    train(build_network("fcn32s", "bilinear", 4, 4, mean, std), data, None, cfg, tmp_path)
    other = build_network("fcn8s", "bilinear", 4, 4, mean, std)
    with pytest.raises(ValueError, match=r"last\.pt does not fit this network \(Missing key"):
        train(other, data, None, TrainConfig(epochs=2, batch_size=2, precision="fp32"), tmp_path)


def test_augment_crops_pads_with_void_and_keeps_pairs_aligned() -> None:
    images = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).view(2, 3, 8, 10)
    labels = (images[:, 0] % 4).long()
    cfg = TrainConfig(crop=(12, 6), scale=(1.0, 1.0), hflip=True)
    out_i, out_l = augment(images, labels, cfg, np.random.default_rng(0), ignore_index=7)
    assert out_i.shape == (2, 3, 12, 6) and out_l.shape == (2, 12, 6)
    padded = out_l == 7
    assert padded[:, 8:].all() and not padded[:, :8].any()  # only the padded rows are void
    assert torch.equal(out_i[:, 0][~padded] % 4, out_l[~padded].float())


def tiny_data(n: int) -> tuple[ArrayData, ArrayData]:
    tr = load_arrays(Synthetic("train", n_images=n, size=(32, 48)))
    va = load_arrays(Synthetic("val", n_images=4, size=(32, 48)))
    return tr, va


@pytest.mark.parametrize(
    "precision",
    [
        "fp32",
        # bf16 autocast, channels-last and the fused AdamW must be as deterministic as float32
        pytest.param("bf16", marks=pytest.mark.skipif(not cpu_has_bf16(), reason="no native bf16")),
    ],
)
def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path, precision: str) -> None:  # noqa: ANN001
    tr, va = tiny_data(8)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=3e-3, crop=(32, 32), seed=5, precision=precision)

    def fresh():  # noqa: ANN202
        torch.manual_seed(0)
        return build_network("fcn8s", "transposed3", tr.n_classes, width=4)

    whole = fresh()
    full = train(whole, tr, va, cfg, tmp_path / "whole", device="cpu")
    killed = fresh()
    train(killed, tr, va, cfg, tmp_path / "killed", device="cpu", stop_after=0)
    meta = json.loads((tmp_path / "killed" / "meta.json").read_text())
    assert meta["result"]["completed"] is False and len(meta["result"]["history"]) == 1
    # a new process would rebuild the model from scratch, then resume from the checkpoint
    resumed_model = fresh()
    resumed = train(resumed_model, tr, va, cfg, tmp_path / "killed", device="cpu")

    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert resumed.best_epoch == full.best_epoch and resumed.completed
    assert resumed.precision == full.precision == precision
    a = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "killed" / "last.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key, value in whole.state_dict().items():  # both hold the best epoch's weights
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_checkpoints_load_with_weights_only_and_keep_the_best_epoch(tmp_path) -> None:  # noqa: ANN001
    tr, va = tiny_data(8)
    cfg = TrainConfig(epochs=2, batch_size=4, crop=(32, 32))
    torch.manual_seed(0)
    model = build_network("fcn32s", "bilinear", tr.n_classes, width=4)
    result = train(model, tr, va, cfg, tmp_path, device="cpu")
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch
    miou = [h["val_miou"] for h in result.history]
    assert result.best_miou == max(miou)
    assert result.history[result.best_epoch]["val_miou"] == max(miou)
    for key, value in model.state_dict().items():
        assert torch.equal(value, best["model"][key])


class _TwoSizes:
    """A split of two image sizes, as Stanford Background's (51 sizes) is."""

    split = "train"
    n_classes = 3
    ignore_index = 255

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.items = [
            (rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
             rng.integers(0, 3, (h, w), dtype=np.uint8), f"im{i}")
            for i, (h, w) in enumerate([(20, 30), (26, 18)])
        ]  # fmt: skip

    def __iter__(self):  # noqa: ANN204
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def test_load_arrays_places_images_of_several_sizes_on_one_void_canvas() -> None:
    data = _TwoSizes()
    arrays = load_arrays(data)
    assert arrays.images.shape == (2, 26, 30, 3) and arrays.labels.shape == (2, 26, 30)
    for i, (image, label, _) in enumerate(data.items):
        h, w = label.shape
        assert (arrays.images[i, :h, :w].numpy() == image).all()
        assert (arrays.labels[i, :h, :w].numpy() == label).all()
        # everything outside the image is void (never learnt, never scored) and black
        assert (arrays.labels[i].numpy() == 255).sum() == 26 * 30 - h * w
        assert arrays.images[i].numpy().sum() == image.astype(np.int64).sum()
