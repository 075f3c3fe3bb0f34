"""FCN-32s/16s/8s-style skip decoders on an ImageNet-pretrained EfficientNet-Lite0 encoder.

The FCN paper's premise is a classification network, pretrained on ImageNet, turned fully
convolutional. This is that premise with an encoder whose weights can be had without a
download (:mod:`deep.efficientnet_lite`): class scores from the stride-32 features, refined by
skips from the stride-16 and stride-8 features (FCN-16s, FCN-8s), then upsampled to the input.

One departure from FCN, said here because it changes what the rows mean: each skip is not a bare
1x1 score layer added to the coarser scores (FCN's linear fusion) but a 1x1 projection to
``width`` channels added to the upsampled coarser features and mixed by one 3x3 convolution
before the class scores. EfficientNet-Lite0's stride-8 and stride-16 maps have 40 and 112
channels (VGG-16's have 256 and 512), too few for a linear class score on each to add much.
The decoder stays FCN's: the same skips, the same strides, no atrous convolution, no pooling
pyramid; the x2 layers are the same constructor argument as in :mod:`deep.fcn8s`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deep.efficientnet_lite import FEATURE_CHANNELS, EfficientNetLite0, load_imagenet_weights
from deep.encoder import conv_bn_relu, pad_to_multiple
from deep.upsampling import Bilinear

#: Skips (as indices into the encoder's feature maps: 3 = stride 16, 2 = stride 8) of each arch.
SKIPS = {"fcn32s": (), "fcn16s": (3,), "fcn8s": (3, 2)}
#: Values of ``freeze_at``: the stride up to which encoder layers are frozen (0: none).
FREEZE_AT = (0, 2, 4, 8)


class LiteFCN(nn.Module):
    """Skip decoder on EfficientNet-Lite0 features; scores at stride 32, 16 or 8, then x2 layers.

    Parameters
    ----------
    n_classes : int
    arch : {"fcn32s", "fcn16s", "fcn8s"}
        Which skips the decoder has (none, stride 16, strides 16 and 8).
    width : int
        Channels of the decoder.
    upsampling : callable
        ``upsampling(channels)`` builds one x2 layer; used between decoder levels (on ``width``
        channels) and for the final steps on the class scores, as in :mod:`deep.fcn8s`.
    pretrained : bool
        Start the encoder from the ImageNet weights (else from random initialisation).
    dropout : float
        Dropout before the class scores.
    freeze_at : {0, 2, 4, 8}
        Encoder layers up to this stride keep their pretrained weights and batch-norm
        statistics (0: everything trains). Their features are generic edges and colours; on
        this CPU the backward pass through the two highest-resolution stages is a fifth of a
        training step (profiled), and 367 images do not need to relearn them.
    """

    def __init__(
        self,
        n_classes: int,
        arch: str = "fcn8s",
        width: int = 96,
        upsampling: Callable[[int], nn.Module] = Bilinear,
        pretrained: bool = True,
        dropout: float = 0.1,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        if arch not in SKIPS:
            raise ValueError(f"arch must be one of {', '.join(SKIPS)}, got {arch!r}")
        self.encoder = EfficientNetLite0()
        if pretrained:
            load_imagenet_weights(self.encoder)
        del self.encoder._fc  # the ImageNet classifier is not part of the FCN
        if freeze_at not in FREEZE_AT:
            raise ValueError(f"freeze_at must be one of {FREEZE_AT}, got {freeze_at!r}")
        self.frozen = nn.ModuleList(self.encoder.layers_up_to(freeze_at) if freeze_at else [])
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.skips = SKIPS[arch]
        self.head = conv_bn_relu(FEATURE_CHANNELS[4], width, 1)
        channels = [FEATURE_CHANNELS[i] for i in self.skips]
        self.project = nn.ModuleList(conv_bn_relu(c, width, 1) for c in channels)
        self.up = nn.ModuleList(upsampling(width) for _ in self.skips)
        self.fuse = nn.ModuleList(conv_bn_relu(width, width, 3) for _ in self.skips)
        self.score = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(width, n_classes, 1))
        # stride of the class scores -> input size: one x2 layer per octave left
        octaves = 5 - len(self.skips)
        self.upsample = nn.ModuleList(upsampling(n_classes) for _ in range(octaves))

    def train(self, mode: bool = True) -> LiteFCN:
        super().train(mode)
        self.frozen.eval()  # frozen layers keep their ImageNet batch-norm statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        maps = self.encoder.features(pad_to_multiple(x, 32)).maps
        y = self.head(maps[4])
        layers = zip(self.skips, self.project, self.up, self.fuse, strict=True)
        for level, project, up, fuse in layers:
            y = fuse(up(y) + project(maps[level]))
        score = self.score(y)
        for layer in self.upsample:
            score = layer(score)
        return score[..., :h, :w]
