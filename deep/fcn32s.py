"""FCN-32s (Long, Shelhamer and Darrell 2015): pool5 scores upsampled 32x, no skip."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deep.encoder import VGGEncoder, fc_head, pad_to_multiple
from deep.upsampling import Bilinear


class FCN32s(nn.Module):
    """Class scores on pool5 (stride 32), upsampled by five x2 ``upsampling`` layers.

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
        self.upsample = nn.ModuleList(upsampling(n_classes) for _ in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        enc = self.encoder(pad_to_multiple(x, 32))
        score = self.head(enc.pools[4])
        # Step k goes from stride 2**(5-k) to 2**(4-k), undoing pool(5-k).
        for level, layer in zip((4, 3, 2, 1, 0), self.upsample, strict=True):
            score = layer(score, enc.indices[level])
        return score[..., :h, :w]


def fcn32s(
    n_classes: int, width: int = 32, upsampling: Callable[[int], nn.Module] = Bilinear
) -> FCN32s:
    """Build an :class:`FCN32s`."""
    return FCN32s(n_classes, width, upsampling)
