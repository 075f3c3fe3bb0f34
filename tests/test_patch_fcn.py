import numpy as np
import pytest
import torch
from torch import nn

from baselines.sliding_window import SlidingWindowCNN
from bench.datasets import CamVid, Synthetic
from bench.datasets.base import resize_image
from deep.patch_fcn import DilatedMaxPool2x2, PatchFCN, fully_convolutional
from deep.patch_net import PatchNet


def twins(net: PatchNet, patch_size: int, n_classes: int):
    """A stride-1 sliding window and the fully convolutional twin around the same network."""
    window = SlidingWindowCNN(patch_size=patch_size, stride=1, batch_size=1024)
    window.net_, window.n_classes_ = net, n_classes
    fcn = PatchFCN(patch_size=patch_size)
    fcn.fcn_, fcn.n_classes_ = fully_convolutional(net), n_classes
    return window, fcn


def random_net(n_classes: int, seed: int, **kwargs) -> PatchNet:
    """A patch network with random weights *and* random BatchNorm statistics, in eval mode.

    Fresh BatchNorm layers are the identity; random running statistics make sure the twin
    really uses them.
    """
    torch.manual_seed(seed)
    net = PatchNet(n_classes, **kwargs)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    with torch.no_grad():
        net.classifier[-1].weight.mul_(50.0)  # logits of a few units, so that labels vary
    return net.eval()


def centre_logits(net: PatchNet, image: np.ndarray) -> None:
    """Shift the last bias so that every class wins somewhere on ``image``.

    A random network gives nearly the same logits everywhere, one class winning all pixels;
    the test of identical labels would then be vacuous.
    """
    fcn = PatchFCN(patch_size=net.patch_size)
    fcn.fcn_ = fully_convolutional(net)
    scores = fcn.decision_function(image)
    with torch.no_grad():
        net.classifier[-1].bias.sub_(torch.from_numpy(np.median(scores, axis=(0, 1))))


def assert_same_output(window, fcn, image):
    a, b = window.decision_function(image), fcn.decision_function(image)
    assert a.shape == b.shape == (*image.shape[:2], window.n_classes_)
    assert np.abs(a - b).max() < 1e-4
    np.testing.assert_array_equal(window.predict(image), fcn.predict(image))
    np.testing.assert_allclose(window.predict_proba(image), fcn.predict_proba(image), atol=1e-5)
    # not a vacuous equality: the scores vary over the image and between classes
    assert a.std(axis=(0, 1)).min() > 1e-3 and len(np.unique(a.argmax(-1))) > 1


@pytest.mark.parametrize(
    ("patch_size", "channels", "hidden"),
    [(40, (16, 32, 32), 64), (28, (8, 8), 16)],
)
def test_twin_equals_sliding_window_on_synthetic(patch_size, channels, hidden):
    image = Synthetic("test", n_images=1, size=(24, 36)).image(0)
    net = random_net(4, seed=1, patch_size=patch_size, channels=channels, hidden=hidden)
    centre_logits(net, image)
    assert_same_output(*twins(net, patch_size, 4), image)


@pytest.fixture(scope="module")
def camvid_images(camvid_root):
    ds = CamVid("test", root=camvid_root, subset=2)
    first, second = ds.image(0), ds.image(1)
    return [
        first[:24, :32],  # top-left corner: reflect padding on two sides
        second[170:202, 300:340],  # the middle of a street scene
        resize_image(second, (27, 36)),  # a whole frame, small
    ]


def test_twin_equals_sliding_window_on_camvid(camvid_images):
    net = random_net(11, seed=2)  # the default architecture, as in the benchmark
    for image in camvid_images:
        centre_logits(net, image)
        assert_same_output(*twins(net, 40, 11), image)


def test_fully_connected_layers_become_reshaped_convolutions():
    net = random_net(5, seed=3, patch_size=40, channels=(8, 16, 16), hidden=24)
    fcn = fully_convolutional(net)
    convs = [m for m in fcn if isinstance(m, nn.Conv2d)]
    fc1, fc2 = convs[-2], convs[-1]
    assert fc1.kernel_size == (3, 3) and fc1.dilation == (8, 8)
    assert fc2.kernel_size == (1, 1)
    linear = net.classifier[1]
    assert torch.equal(fc1.weight.flatten(1), linear.weight)
    assert [c.dilation[0] for c in convs[:3]] == [1, 2, 4]
    pools = [m for m in fcn if isinstance(m, DilatedMaxPool2x2)]
    assert [p.dilation for p in pools] == [1, 2, 4]
    with pytest.raises(TypeError, match="AvgPool2d"):
        net.features[3] = nn.AvgPool2d(2)
        fully_convolutional(net)


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_dilated_pool_equals_torch_max_pool(dilation):
    x = torch.randn(2, 3, 17, 23)
    expected = nn.MaxPool2d(2, stride=1, dilation=dilation)(x)
    assert torch.equal(DilatedMaxPool2x2(dilation)(x), expected)


def test_patch_fcn_reuses_the_sliding_window_checkpoint(tmp_path):
    train = Synthetic("train", n_images=6, size=(32, 40))
    test = Synthetic("test", n_images=1, size=(24, 32))
    params = dict(
        patch_size=32, channels=(8, 16, 16), hidden=32, epochs=1, crops_per_epoch=384,
        candidates_per_class=50, val_crops_per_class=0, checkpoint_dir=str(tmp_path),
    )  # fmt: skip
    window = SlidingWindowCNN(**params).fit(train)
    fcn = PatchFCN(**params).fit(train)
    assert window.trained_ and not fcn.trained_
    assert_same_output(window, fcn, test.image(0))
    # with reuse_checkpoint=False it trains its own copy (same seed: same weights)
    alone = PatchFCN(**params, reuse_checkpoint=False).fit(train)
    assert alone.trained_
    np.testing.assert_allclose(
        alone.decision_function(test.image(0)), fcn.decision_function(test.image(0)), atol=1e-5
    )
