import numpy as np
import pytest
import torch
from helpers import evaluate

import deep.patch_train as patch_train
from baselines.class_prior import ClassPrior
from baselines.sliding_window import SlidingWindowCNN, sample_positions
from bench.datasets import Synthetic
from deep.patch_net import fc_input_size, normalise
from deep.patch_train import TRAIN_PARAMS, checkpoint_path

# A tiny network and a short training: seconds on two CPU cores.
TINY = dict(
    patch_size=32,
    channels=(8, 16, 16),
    hidden=32,
    epochs=2,
    crops_per_epoch=1536,
    candidates_per_class=100,
    val_crops_per_class=40,
    batch_size=512,
)


@pytest.fixture(scope="module")
def data():
    return (
        Synthetic("train", n_images=10, size=(48, 64)),
        Synthetic("val", n_images=3, size=(48, 64)),
        Synthetic("test", n_images=4, size=(48, 64)),
    )


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    train, val, _ = data
    ckpt = tmp_path_factory.mktemp("ckpt")
    return SlidingWindowCNN(stride=4, checkpoint_dir=str(ckpt), **TINY).fit(train, val)


def test_patch_size_must_pass_the_blocks_without_remainder():
    assert fc_input_size(40, [5, 3, 3]) == 3
    assert fc_input_size(32, [5, 3, 3]) == 2
    with pytest.raises(ValueError, match="valid: .*32, 40, 48"):
        fc_input_size(41, [5, 3, 3])


def test_sample_positions_cover_both_ends():
    np.testing.assert_array_equal(sample_positions(10, 4), [0, 4, 8, 9])
    np.testing.assert_array_equal(sample_positions(9, 4), [0, 4, 8])
    np.testing.assert_array_equal(sample_positions(5, 1), np.arange(5))


def test_learns_synthetic_well_above_chance(data, fitted):
    train, _, test = data
    s = evaluate(fitted, test)
    prior = evaluate(ClassPrior().fit(train), test)
    assert s["miou"] > 0.4 and s["miou"] > prior["miou"] + 0.2
    assert s["mean_acc"] > 0.6
    assert len(fitted.history_) == 2 and fitted.trained_


def test_strided_scores_are_the_crop_scores_at_the_sampled_pixels(data, fitted):
    image = data[2].image(1)
    fitted.set_params(stride=1)
    try:
        full = fitted.decision_function(image)
    finally:
        fitted.set_params(stride=4)
    strided = fitted.decision_function(image)
    ys, xs = sample_positions(48, 4), sample_positions(64, 4)
    np.testing.assert_allclose(strided[np.ix_(ys, xs)], full[np.ix_(ys, xs)], atol=1e-5)
    # between samples the scores are interpolated: on the midpoint of two sampled rows, exactly
    # the mean of their scores
    np.testing.assert_allclose(strided[2, xs], (full[0, xs] + full[4, xs]) / 2, atol=1e-5)
    assert np.abs(strided - full).max() > 1e-3  # the interpolation is not the identity


def test_one_crop_gives_the_scores_of_its_pixel(fitted, data):
    """The crop of pixel (y, x) is centred on it: feed it by hand to the network."""
    image = data[2].image(2)
    fitted.set_params(stride=1)
    try:
        scores = fitted.decision_function(image)
    finally:
        fitted.set_params(stride=4)
    p, a = 32, 16
    padded = np.pad(image, ((a, p - 1 - a), (a, p - 1 - a), (0, 0)), mode="reflect")
    for y, x in [(0, 0), (20, 33), (47, 63)]:
        crop = normalise(padded[y : y + p, x : x + p])[None]
        with torch.inference_mode():
            expected = fitted.net_(crop)[0].numpy()
        np.testing.assert_allclose(scores[y, x], expected, atol=1e-5)
        # the crop's centre (index a) is the pixel itself
        np.testing.assert_array_equal(padded[y + a, x + a], image[y, x])


def test_a_finished_checkpoint_is_loaded_not_retrained(data, fitted):
    train, val, test = data
    again = SlidingWindowCNN(stride=4, checkpoint_dir=fitted.checkpoint_dir, **TINY)
    again.fit(train, val)
    assert not again.trained_
    np.testing.assert_array_equal(
        again.decision_function(test.image(0)), fitted.decision_function(test.image(0))
    )
    # another seed is another network
    other = SlidingWindowCNN(checkpoint_dir=fitted.checkpoint_dir, **{**TINY, "epochs": 1})
    assert checkpoint_path(
        {k: other.get_params()[k] for k in TRAIN_PARAMS}, train, val, other.checkpoint_dir
    ) != checkpoint_path(
        {k: fitted.get_params()[k] for k in TRAIN_PARAMS}, train, val, fitted.checkpoint_dir
    )


class Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_uninterrupted_weights(data, tmp_path, monkeypatch):
    train, val, _ = data
    params = {**TINY, "epochs": 2, "crops_per_epoch": 256, "dropout": 0.3}
    whole = SlidingWindowCNN(checkpoint_dir=str(tmp_path / "a"), **params).fit(train, val)

    real_save = patch_train.save_checkpoint
    saves = []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        saves.append(1)
        if len(saves) == 1:
            raise Killed  # killed right after epoch 1 was written

    monkeypatch.setattr(patch_train, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        SlidingWindowCNN(checkpoint_dir=str(tmp_path / "b"), **params).fit(train, val)
    monkeypatch.setattr(patch_train, "save_checkpoint", real_save)

    path = next((tmp_path / "b").glob("*/last.pt"))
    ckpt = torch.load(path, weights_only=True)  # loadable without unpickling code
    assert ckpt["epoch"] == 1
    resumed = SlidingWindowCNN(checkpoint_dir=str(tmp_path / "b"), **params).fit(train, val)
    assert resumed.trained_ and len(resumed.history_) == 2
    for (name, a), b in zip(
        whole.net_.state_dict().items(), resumed.net_.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    last_a = torch.load(next((tmp_path / "a").glob("*/last.pt")), weights_only=True)
    last_b = torch.load(path, weights_only=True)
    for key, value in last_a["model"].items():
        assert torch.equal(value, last_b["model"][key]), key

    def scores_only(history):  # epoch times differ between runs; everything else may not
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert scores_only(whole.history_) == scores_only(resumed.history_)


def test_crop_sampler_takes_images_of_several_sizes():
    from deep.patch_net import pad_for_patches
    from deep.patch_train import CropSampler

    rng = np.random.default_rng(1)
    sizes = [(20, 30), (26, 18)]
    items = [
        (
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            rng.integers(0, 3, (h, w), np.uint8),
            str(i),
        )
        for i, (h, w) in enumerate(sizes)
    ]

    class TwoSizes(list):
        split, n_classes, ignore_index = "train", 3, 255

    params = {"patch_size": 8, "random_state": 0, "candidates_per_class": 50, "class_balance": 0.5}
    sampler = CropSampler(TwoSizes(items), params, torch.device("cpu"))
    idx, _ = sampler.draw(200, np.random.default_rng(0))
    flips = np.random.default_rng(1).random(len(idx)) < 0.5
    crops = sampler.gather(idx, flips)
    assert set(idx[:, 0]) == {0, 1}
    for crop, (i, y, x), flip in zip(crops, idx, flips, strict=True):
        h, w = sizes[i]
        assert y < h and x < w  # centres lie in their own image
        padded = pad_for_patches(torch.from_numpy(items[i][0]).permute(2, 0, 1), 8)
        # even patch: a mirrored crop is the crop one column right, flipped (never at the edge)
        x0 = x + 1 if flip and x < w - 1 else x
        want = padded[:, y : y + 8, x0 : x0 + 8]
        want = want.flip(-1) if flip and x < w - 1 else want
        assert torch.equal(crop, normalise(want[None])[0])
