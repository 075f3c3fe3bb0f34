"""Upsampling layers of the FCN decoders: each doubles the height and width of a score map.

Every layer is its own class with the same interface, so a decoder takes the class (or any
callable ``channels -> nn.Module``) as a constructor argument:

* ``__init__(channels)``: the number of channels it upsamples (the class scores);
* ``forward(x, indices=None)``: ``x`` is (N, C, h, w), the result (N, C, 2h, 2w). ``indices`` are
  the encoder's max-pooling indices of the matching level; only :class:`MaxUnpool` uses them.

The fixed layers (:class:`Bilinear`, :class:`Nearest`, :class:`BedOfNails`, :class:`MaxUnpool`)
have no parameters; the transposed convolutions, :class:`ResizeConv` and the sparse layers
followed by a convolution (:class:`BedOfNailsConv`, :class:`MaxUnpoolConv`) are learnt and start
from an interpolation, so that at initialisation every learnt decoder upsamples sensibly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Bilinear(nn.Module):
    """Fixed bilinear interpolation (``align_corners=False``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class Nearest(nn.Module):
    """Nearest neighbour: each value copied into a 2x2 block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class BedOfNails(nn.Module):
    """Bed of nails: each value in the top-left of its 2x2 cell, zeros elsewhere.

    It is the zero insertion a stride-2 transposed convolution performs before convolving; alone
    it leaves three pixels out of four at exactly zero.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        out = x.new_zeros(n, c, 2 * h, 2 * w)
        out[:, :, ::2, ::2] = x
        return out


class MaxUnpool(nn.Module):
    """Max-unpooling with the encoder's pooling indices (SegNet).

    Each value goes back to the position its 2x2 window's maximum came from in the encoder, zeros
    elsewhere. The encoder's indices are per *feature* channel while the decoder unpools *class
    scores* (another number of channels), so each window uses the position that most feature
    channels picked (ties to the lowest position): one switch map shared by all classes.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        if indices is None:
            raise ValueError("MaxUnpool needs the encoder's pooling indices")
        n, c, h, w = x.shape
        switch = window_switches(indices, (2 * h, 2 * w))
        return F.max_unpool2d(
            x, switch.expand(n, c, h, w).contiguous(), 2, 2, output_size=(2 * h, 2 * w)
        )


@torch.no_grad()
def window_switches(indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The most chosen position of each 2x2 window over channels, as flat unpooling indices.

    Parameters
    ----------
    indices : Tensor of int64, shape (N, D, h, w)
        ``max_pool2d(..., return_indices=True)`` indices into the (H, W) = ``size`` input.
    size : (int, int)

    Returns
    -------
    Tensor of int64, shape (N, 1, h, w)
    """
    width = size[1]
    row, col = indices // width, indices % width
    position = (row % 2) * 2 + (col % 2)  # 0..3 inside the window
    votes = F.one_hot(position, 4).sum(dim=1)  # (N, h, w, 4)
    best = votes.argmax(dim=-1, keepdim=True).permute(0, 3, 1, 2)  # (N, 1, h, w)
    h, w = indices.shape[-2:]
    rows = 2 * torch.arange(h, device=indices.device).view(1, 1, h, 1) + best // 2
    cols = 2 * torch.arange(w, device=indices.device).view(1, 1, 1, w) + best % 2
    return rows * width + cols


def bilinear_kernel(size: int) -> torch.Tensor:
    """The 2-D kernel with which a stride-2 transposed convolution interpolates linearly.

    For ``size`` 4 it is exact bilinear upsampling (as FCN initialises its deconvolutions); for
    3 it interpolates with uneven overlap ([0.5, 1, 0.5]); for 2 (no overlap) it is nearest
    neighbour.
    """
    if size == 2:
        return torch.ones(2, 2)
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    return taps[:, None] * taps[None, :]


class _TransposedConv(nn.Module):
    """A learnable stride-2 transposed convolution, C -> C, started as interpolation.

    Padding and output padding are chosen so the output is exactly (2h, 2w) for every kernel
    size. The weights start as :func:`bilinear_kernel` on the channel diagonal (each class
    upsampled alone), zeros elsewhere.
    """

    kernel_size: int = 4

    def __init__(self, channels: int, bilinear_init: bool = True) -> None:
        super().__init__()
        k = self.kernel_size
        padding = (k - 1) // 2
        self.conv = nn.ConvTranspose2d(
            channels, channels, k, stride=2, padding=padding, output_padding=2 + 2 * padding - k
        )
        if bilinear_init:
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.zero_()
                kernel = bilinear_kernel(k)
                for ch in range(channels):
                    self.conv.weight[ch, ch] = kernel

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class TransposedConv4(_TransposedConv):
    """Transposed convolution, 4x4 kernel, stride 2 (even overlap), bilinear initialisation."""

    kernel_size = 4


class TransposedConv3(_TransposedConv):
    """Transposed convolution, 3x3 kernel, stride 2: uneven overlap (the checkerboard suspect)."""

    kernel_size = 3


class TransposedConv2(_TransposedConv):
    """Transposed convolution, 2x2 kernel, stride 2: no overlap, initialised as nearest."""

    kernel_size = 2


class ResizeConv(nn.Module):
    """Resize-then-convolve (Odena et al. 2016): nearest x2, then a learnable 3x3 convolution.

    The convolution starts as the identity, so the layer starts as nearest neighbour.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for ch in range(channels):
                self.conv.weight[ch, ch, 1, 1] = 1.0

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _SparseThenConv(nn.Module):
    """A sparse x2 layer, then a learnable 3x3 convolution that fills the zeros (C -> C).

    SegNet's decoders follow every max-unpooling with trainable convolutions for this reason:
    alone, a sparse layer leaves 3 of 4 outputs at exactly zero after one step and 63 of 64
    after FCN-8s's final three, and nothing learnable can fill them. The convolution starts as
    :func:`bilinear_kernel` (3) on the channel diagonal, which spreads each kept value over
    its whole 2x2 cell wherever in the cell it sits.
    """

    def __init__(self, sparse: nn.Module, channels: int) -> None:
        super().__init__()
        self.sparse = sparse
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            kernel = bilinear_kernel(3)
            for ch in range(channels):
                self.conv.weight[ch, ch] = kernel

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(self.sparse(x, indices))


class BedOfNailsConv(_SparseThenConv):
    """Bed of nails, then a learnable 3x3 convolution.

    This *is* a 3x3 stride-2 transposed convolution (zero insertion, then a convolution with
    the flipped kernel; ``tests/test_upsampling.py`` checks it), written the long way round.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(BedOfNails(channels), channels)


class MaxUnpoolConv(_SparseThenConv):
    """Max-unpooling with the encoder's indices, then a learnable 3x3 convolution (SegNet)."""

    def __init__(self, channels: int) -> None:
        super().__init__(MaxUnpool(channels), channels)


#: Config name -> upsampling class.
UPSAMPLING: dict[str, Callable[[int], nn.Module]] = {
    "bilinear": Bilinear,
    "nearest": Nearest,
    "bed_of_nails": BedOfNails,
    "max_unpool": MaxUnpool,
    "bed_of_nails_conv": BedOfNailsConv,
    "max_unpool_conv": MaxUnpoolConv,
    "transposed3": TransposedConv3,
    "transposed4": TransposedConv4,
    "transposed2": TransposedConv2,
    "resize_conv": ResizeConv,
}


def upsampling_class(name: str) -> Callable[[int], nn.Module]:
    """The upsampling class registered under ``name``."""
    if name not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {name!r}; known: {', '.join(UPSAMPLING)}")
    return UPSAMPLING[name]
