"""FCN-8s (Long, Shelhamer and Darrell 2015): skips from pool4 and pool3, then x8."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deep.encoder import VGGEncoder, fc_head, pad_to_multiple, score_layer
from deep.upsampling import Bilinear


class FCN8s(nn.Module):
    """FCN-16s with a second skip: pool3's class scores are added at stride 8.

    Every upsampling step (stride 32 -> 16, 16 -> 8, then three more to stride 1) is one x2
    ``upsampling`` layer, so the upsampling study swaps one decoder layer and nothing else.

    Parameters
    ----------
    n_classes : int
    width : int
        Width of the :class:`~deep.encoder.VGGEncoder`.
    upsampling : callable
        ``upsampling(channels)`` builds one x2 layer (a class of :mod:`deep.upsampling`).
    """

    def __init__(
        self, n_classes: int, width: int = 32, upsampling: Callable[[int], nn.Module] = Bilinear
    ) -> None:
        super().__init__()
        self.encoder = VGGEncoder(width)
        self.head = fc_head(self.encoder.channels[4], n_classes)
        self.score_pool4 = score_layer(self.encoder.channels[3], n_classes)
        self.score_pool3 = score_layer(self.encoder.channels[2], n_classes)
        self.up_pool5 = upsampling(n_classes)
        self.up_pool4 = upsampling(n_classes)
        self.upsample = nn.ModuleList(upsampling(n_classes) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        enc = self.encoder(pad_to_multiple(x, 32))
        score = self.head(enc.pools[4])
        score = self.up_pool5(score, enc.indices[4]) + self.score_pool4(enc.pools[3])
        score = self.up_pool4(score, enc.indices[3]) + self.score_pool3(enc.pools[2])
        for level, layer in zip((2, 1, 0), self.upsample, strict=True):
            score = layer(score, enc.indices[level])
        return score[..., :h, :w]


def fcn8s(
    n_classes: int, width: int = 32, upsampling: Callable[[int], nn.Module] = Bilinear
) -> FCN8s:
    """Build an :class:`FCN8s`."""
    return FCN8s(n_classes, width, upsampling)
