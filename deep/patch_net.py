"""The patch classifier of the sliding-window CNN: a small CNN labelling the centre of a crop.

A torchvision-style model file: the network and the two input helpers (normalisation, reflect
padding) that its two users share, :class:`~baselines.sliding_window.SlidingWindowCNN` (one
crop per pixel) and :class:`~deep.patch_fcn.PatchFCN` (the same weights, fully convolutional).

Crop geometry: the crop "around" pixel ``(y, x)`` spans rows ``y - a .. y - a + P - 1`` (and
likewise columns) with ``P = patch_size`` and ``a = P // 2``; the image is reflect-padded by
``a`` before and ``P - 1 - a`` after, so the crop of pixel ``(y, x)`` starts at ``(y, x)`` of
the padded image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Per-channel mean and standard deviation of the input (0..1 scale). Fixed constants rather
#: than statistics of the training set, so that the same image always gives the same input.
MEAN = (0.45, 0.45, 0.45)
STD = (0.25, 0.25, 0.25)


def fc_input_size(patch_size: int, kernels: Sequence[int]) -> int:
    """Side of the feature map that reaches the first fully connected layer.

    Every block is a valid ``k x k`` convolution followed by a 2x2 max-pool of stride 2. The
    patch size must pass through every block without a pooling remainder: a dropped row would
    be a pixel of the crop that the classifier never looks at, and the crop would no longer be
    centred on its pixel.

    Raises
    ------
    ValueError
        If ``patch_size`` leaves an odd size before a pooling or nothing at the end.
    """
    size = patch_size
    for k in kernels:
        size -= k - 1
        if size <= 0 or size % 2:
            valid = [p for p in range(8, 129) if _passes(p, kernels)]
            raise ValueError(f"patch_size {patch_size} does not fit the blocks; valid: {valid}")
        size //= 2
    return size


def _passes(patch_size: int, kernels: Sequence[int]) -> bool:
    size = patch_size
    for k in kernels:
        size -= k - 1
        if size <= 0 or size % 2:
            return False
        size //= 2
    return True


class PatchNet(nn.Module):
    """CNN that classifies the centre pixel of a square crop.

    Parameters
    ----------
    n_classes : int
    patch_size : int
        Side of the crop; see :func:`fc_input_size` for the sizes that fit.
    channels : sequence of int
        Output channels of each block (5x5 convolution first, 3x3 after).
    hidden : int
        Units of the hidden fully connected layer.
    dropout : float
        Dropout before the last layer (inactive in eval mode, so both inference paths agree).
    """

    def __init__(
        self,
        n_classes: int,
        patch_size: int = 40,
        channels: Sequence[int] = (16, 32, 32),
        hidden: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        kernels = [5] + [3] * (len(channels) - 1)
        side = fc_input_size(patch_size, kernels)
        layers: list[nn.Module] = []
        c_in = 3
        for k, c_out in zip(kernels, channels, strict=True):
            # No padding anywhere: zero padding inside a crop would differ from the
            # neighbouring pixels that the fully convolutional twin sees there.
            layers += [
                nn.Conv2d(c_in, c_out, k, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits), shape (B, n_classes), of crops (B, 3, P, P)."""
        return self.classifier(self.features(x))


def normalise(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 HxWx3 array (or uint8 (..., 3, H, W) tensor) -> normalised float32 (..., 3, H, W)."""
    if isinstance(image, np.ndarray):
        x = torch.tensor(image).permute(2, 0, 1)  # a copy: dataset arrays may be read-only
    else:
        x = image
    mean = torch.tensor(MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def pad_for_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Reflect-pad (..., H, W) so that crop ``(y, x)`` starts at ``(y, x)`` (module docstring)."""
    a = patch_size // 2
    b = patch_size - 1 - a
    squeeze = x.ndim == 3
    out = F.pad(x[None] if squeeze else x, (a, b, a, b), mode="reflect")
    return out[0] if squeeze else out
