"""The encoder all FCNs share: VGG-like, with batch norm, sized for training from scratch."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: Convolutions per stage: VGG-16's layout (2, 2, 3, 3, 3).
VGG16_CONVS = (2, 2, 3, 3, 3)


class EncoderOutput(NamedTuple):
    """The pooled feature maps pool1..pool5 (strides 2..32) and their max-pooling indices."""

    pools: tuple[torch.Tensor, ...]
    indices: tuple[torch.Tensor, ...]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Convolution (no bias: batch norm has one), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class VGGEncoder(nn.Module):
    """Five stages of 3x3 convolutions with batch norm, each followed by 2x2 max pooling.

    Stage ``i`` has ``width * min(2**i, 8)`` channels: ``width=64`` is VGG-16's encoder; the
    from-scratch profiles use narrower ones (fewer parameters for 367 training images, and
    affordable on a CPU).

    Parameters
    ----------
    width : int
        Channels of the first stage.
    convs : tuple of int
        Convolutions in each of the five stages.
    in_channels : int
    """

    def __init__(
        self, width: int = 32, convs: tuple[int, ...] = VGG16_CONVS, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.channels = tuple(width * min(2**i, 8) for i in range(len(convs)))
        stages = []
        previous = in_channels
        for n_convs, channels in zip(convs, self.channels, strict=True):
            layers = []
            for _ in range(n_convs):
                layers.append(conv_bn_relu(previous, channels))
                previous = channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        pools, indices = [], []
        for stage in self.stages:
            x, index = F.max_pool2d(stage(x), 2, 2, return_indices=True)
            pools.append(x)
            indices.append(index)
        return EncoderOutput(tuple(pools), tuple(indices))


def fc_head(in_channels: int, n_classes: int, dropout: float = 0.1) -> nn.Sequential:
    """FCN's "fc6, fc7, score" on pool5, shrunk for training from scratch.

    VGG's 7x7x4096 fully connected layers become a 3x3 and a 1x1 convolution of twice the pool5
    width: the 4096-wide layers only pay off with ImageNet pretraining.
    """
    hidden = 2 * in_channels
    return nn.Sequential(
        conv_bn_relu(in_channels, hidden, 3),
        nn.Dropout2d(dropout),
        conv_bn_relu(hidden, hidden, 1),
        nn.Dropout2d(dropout),
        nn.Conv2d(hidden, n_classes, 1),
    )


def score_layer(in_channels: int, n_classes: int) -> nn.Conv2d:
    """A 1x1 class-score layer on a skip feature map, zero-initialised as in FCN.

    Zero start means adding the skip does not disturb the coarser prediction at first.
    """
    layer = nn.Conv2d(in_channels, n_classes, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def pad_to_multiple(x: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Zero-pad the bottom and right of (N, C, H, W) so H and W divide by ``multiple``.

    Every pooling is then exact, so upsampled maps and skips line up without cropping offsets.
    """
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple))
