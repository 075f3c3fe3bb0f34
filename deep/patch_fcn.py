"""The sliding-window patch CNN made fully convolutional: same weights, one pass per image.

:func:`fully_convolutional` turns a trained :class:`~deep.patch_net.PatchNet` into a
network that maps the reflect-padded image to the scores of every pixel's own crop at once:

* each fully connected layer becomes a convolution whose kernel is the layer's weight matrix
  reshaped (the first one sees the whole last feature map, later ones are 1x1);
* pooling keeps its 2x2 window but loses its stride (stride 1), and every later convolution
  and pooling is dilated by the product of the removed strides ("a trous"). A pixel's score
  then reads exactly the activations its crop's classifier reads, so the output is the
  sliding-window output at stride 1, with the computation that neighbouring crops share done
  once instead of once per crop.

Nothing is retrained, and BatchNorm (eval mode: a fixed per-channel affine map) and ReLU are
kept as they are.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from bench.method import SegmentationMethod
from deep.checkpoints import checkpoint_root
from deep.patch_net import PatchNet, normalise, pad_for_patches
from deep.patch_train import TRAIN_PARAMS, checkpoint_summary, train_patch_net
from deep.train import resolve_device

log = logging.getLogger(__name__)


class DilatedMaxPool2x2(nn.Module):
    """2x2 max-pool of stride 1 whose taps are ``dilation`` apart.

    Same values as ``nn.MaxPool2d(2, stride=1, dilation=d)``, written as two elementwise
    maxima of shifted views because torch's dilated max-pool is slow on the CPU (measured at
    360x480: half of the twin's time went to it, several times the cost of the convolutions).
    """

    def __init__(self, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        x = torch.maximum(x[..., :, :-d], x[..., :, d:])
        return torch.maximum(x[..., :-d, :], x[..., d:, :])

    def extra_repr(self) -> str:
        return f"dilation={self.dilation}"


def fully_convolutional(net: PatchNet) -> nn.Sequential:
    """The fully convolutional twin of a trained patch classifier (in eval mode).

    Parameters
    ----------
    net : PatchNet
        Blocks of Conv2d / BatchNorm2d / ReLU / MaxPool2d(2), then Flatten, Linear, ReLU,
        Dropout, Linear.

    Returns
    -------
    fcn : torch.nn.Sequential
        Maps a (B, 3, H + P - 1, W + P - 1) padded image to (B, n_classes, H, W) scores.
    """
    layers: list[nn.Module] = []
    dilation = 1
    channels = 3
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            conv = nn.Conv2d(
                m.in_channels, m.out_channels, m.kernel_size, dilation=dilation,
                bias=m.bias is not None,
            )  # fmt: skip
            conv.load_state_dict(m.state_dict())
            layers.append(conv)
            channels = m.out_channels
        elif isinstance(m, nn.MaxPool2d):
            if (m.kernel_size, m.stride, m.padding, m.dilation) != (2, 2, 0, 1):
                raise TypeError(f"only 2x2 max-pools of stride 2 are supported, got {m}")
            layers.append(DilatedMaxPool2x2(dilation))
            dilation *= 2
        elif isinstance(m, nn.BatchNorm2d | nn.ReLU):
            layers.append(copy.deepcopy(m))
        else:
            raise TypeError(f"no fully convolutional equivalent for {type(m).__name__}")
    first = True
    for m in net.classifier:
        if isinstance(m, nn.Linear):
            # The first Linear reads the flattened (C, s, s) map; later ones a single vector.
            side = int(round((m.in_features / channels) ** 0.5)) if first else 1
            conv = nn.Conv2d(channels, m.out_features, side, dilation=dilation if first else 1)
            with torch.no_grad():
                conv.weight.copy_(m.weight.view(m.out_features, channels, side, side))
                conv.bias.copy_(m.bias)
            layers.append(conv)
            channels, first = m.out_features, False
        elif isinstance(m, nn.ReLU | nn.Dropout):
            layers.append(copy.deepcopy(m))
        elif not isinstance(m, nn.Flatten):
            raise TypeError(f"no fully convolutional equivalent for {type(m).__name__}")
    device = next(net.parameters()).device
    return nn.Sequential(*layers).to(device).eval()


class PatchFCN(SegmentationMethod):
    """The sliding-window CNN's fully convolutional twin: every pixel's crop in one pass.

    Training is :class:`~baselines.sliding_window.SlidingWindowCNN`'s, with the same
    parameters: with the same parameters, seed and data both share one checkpoint, so when the
    sliding-window row of a config has already trained the patch classifier this method loads
    it (``reuse_checkpoint``) and only converts it; it trains only when no finished checkpoint
    exists. ``trained_`` says which happened.

    Parameters
    ----------
    patch_size, channels, hidden, dropout, epochs, crops_per_epoch, train_batch_size, lr,
    weight_decay, class_balance, candidates_per_class, flip, val_crops_per_class, random_state
        As :class:`~baselines.sliding_window.SlidingWindowCNN` (they decide the weights).
    reuse_checkpoint : bool
        Load the patch classifier from the checkpoint cache when it is there (the default);
        False retrains it in a private temporary folder.
    checkpoint_dir : str or None
        Checkpoint cache (the runner passes ``runs/checkpoints``); None: a temporary folder.
    device : str or None
    """

    def __init__(
        self,
        patch_size: int = 40,
        channels: tuple[int, ...] = (16, 32, 32),
        hidden: int = 64,
        dropout: float = 0.0,
        epochs: int = 4,
        crops_per_epoch: int = 16000,
        train_batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        class_balance: float = 1.0,
        candidates_per_class: int = 200,
        flip: bool = True,
        val_crops_per_class: int = 100,
        reuse_checkpoint: bool = True,
        checkpoint_dir: str | None = None,
        device: str | None = None,
        random_state: int = 0,
    ) -> None:
        self.patch_size = patch_size
        self.channels = channels
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.crops_per_epoch = crops_per_epoch
        self.train_batch_size = train_batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.class_balance = class_balance
        self.candidates_per_class = candidates_per_class
        self.flip = flip
        self.val_crops_per_class = val_crops_per_class
        self.reuse_checkpoint = reuse_checkpoint
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.random_state = random_state

    def fit(self, dataset, val_dataset=None) -> PatchFCN:  # noqa: ANN001
        """Get the trained patch classifier (from the shared checkpoint if any) and convert it."""
        params = {p: getattr(self, p) for p in TRAIN_PARAMS}
        device = resolve_device(self.device or "auto")
        # reuse_checkpoint=False trains in a private temporary folder
        with checkpoint_root(self.checkpoint_dir if self.reuse_checkpoint else None) as root:
            net, self.history_, self.trained_ = train_patch_net(
                params, dataset, val_dataset, root, device
            )
        log.info("patch classifier %s", "trained" if self.trained_ else "loaded from checkpoint")
        self.patch_net_ = net
        self.fcn_ = fully_convolutional(net)
        self.n_classes_ = dataset.n_classes
        return self

    def fit_summary(self) -> dict:
        """Whether the patch classifier was trained now or loaded, and what it cost."""
        return {"checkpoint": checkpoint_summary(self.history_, self.trained_),
                "history": self.history_}  # fmt: skip

    def decision_function(self, image: np.ndarray) -> np.ndarray:
        """Class scores (logits) of every pixel, float32 (H, W, C): one forward pass."""
        device = next(self.fcn_.parameters()).device
        x = pad_for_patches(normalise(image).to(device), self.patch_size)[None]
        with torch.inference_mode():
            scores = self.fcn_(x)[0]
        return scores.permute(1, 2, 0).float().cpu().numpy()

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        scores = torch.from_numpy(self.decision_function(image))
        return torch.softmax(scores, dim=-1).numpy()
