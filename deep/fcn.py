"""FCN-32s/16s/8s as a segbench method (registered as ``fcn``): a VGG-like encoder trained from
scratch, or an ImageNet-pretrained EfficientNet-Lite0 encoder (:mod:`deep.lite_fcn`)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.datasets.base import evenly_spaced
from bench.method import SegmentationMethod
from deep.checkerboard import checkerboard_index, margin
from deep.checkpoints import checkpoint_folder, checkpoint_root
from deep.ddp import process_group
from deep.efficientnet_lite import INPUT_MEAN, INPUT_STD
from deep.fcn8s import FCN8s
from deep.fcn16s import FCN16s
from deep.fcn32s import FCN32s
from deep.lite_fcn import FREEZE_AT, LiteFCN
from deep.train import (
    CLASS_WEIGHTS,
    TrainConfig,
    forward_logits,
    load_arrays,
    resolve_device,
    resolve_precision,
    train,
)
from deep.upsampling import upsampling_class

log = logging.getLogger(__name__)

ARCHS: dict[str, type[nn.Module]] = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}
#: Encoders, and the pretrained weights each can start from (None: random initialisation).
ENCODERS: dict[str, tuple[str | None, ...]] = {
    "vgg": (None,),
    "efficientnet_lite0": (None, "imagenet"),
}
#: Val images whose logits give the checkerboard index stored in the row.
DIAGNOSTIC_IMAGES = 8


class Normalize(nn.Module):
    """Images in 0..255 to zero mean, unit variance per channel (training-set statistics)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.view(1, 3, 1, 1).float())
        self.register_buffer("std", std.view(1, 3, 1, 1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_network(
    arch: str,
    upsampling: str,
    n_classes: int,
    width: int,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    encoder: str = "vgg",
    pretrained: str | None = None,
    freeze_at: int = 0,
) -> nn.Sequential:
    """Normalisation followed by the FCN ``arch`` with ``upsampling`` layers on ``encoder``.

    The VGG-like encoder normalises with the training set's ``mean`` and ``std``; the
    EfficientNet-Lite0 encoder with the fixed scaling its ImageNet weights were trained with.
    """
    check_encoder(arch, encoder, pretrained, freeze_at)
    if encoder == "efficientnet_lite0":
        mean, std = torch.full((3,), INPUT_MEAN), torch.full((3,), INPUT_STD)
        net = LiteFCN(
            n_classes,
            arch,
            width,
            upsampling_class(upsampling),
            pretrained=pretrained == "imagenet",
            freeze_at=freeze_at,
        )
        return nn.Sequential(Normalize(mean, std), net)
    mean = torch.zeros(3) if mean is None else torch.as_tensor(mean)
    std = torch.ones(3) if std is None else torch.as_tensor(std)
    net = ARCHS[arch](n_classes, width, upsampling_class(upsampling))
    return nn.Sequential(Normalize(mean, std), net)


def check_encoder(arch: str, encoder: str, pretrained: str | None, freeze_at: int) -> None:
    """One ``ValueError`` naming the setting, for an arch/encoder/weights combination that
    does not exist (raised before any data is loaded or weights are read)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    if pretrained not in ENCODERS[encoder]:
        choices = ", ".join(repr(p) for p in ENCODERS[encoder])
        raise ValueError(
            f"pretrained must be one of {choices} for encoder {encoder!r}, got {pretrained!r}"
        )
    if freeze_at not in FREEZE_AT or isinstance(freeze_at, bool):
        raise ValueError(f"freeze_at must be one of {FREEZE_AT}, got {freeze_at!r}")
    if freeze_at and pretrained is None:
        raise ValueError(f"freeze_at={freeze_at!r} freezes pretrained layers: set pretrained")


class FCN(SegmentationMethod):
    """Fully convolutional network (Long et al. 2015) trained on the training split.

    The encoder is VGG-like and trained from scratch (``encoder="vgg"``), or EfficientNet-Lite0
    (``encoder="efficientnet_lite0"``), optionally starting from its ImageNet weights
    (``pretrained="imagenet"``, shipped with a pinned package: nothing is downloaded).

    Training (see :mod:`deep.train`) uses class-weighted cross-entropy, scale, crop
    and flip augmentation, AdamW or SGD with warm-up and cosine decay, and mixed precision on
    CUDA. Each epoch is checkpointed under ``<checkpoint_dir>/fcn-<hash>``, where the hash covers
    the parameters, the training data and the code (:mod:`deep.checkpoints`), so a killed fit
    resumes where it stopped and a finished one is loaded instead of retrained.

    Parameters
    ----------
    arch : {"fcn32s", "fcn16s", "fcn8s"}
    upsampling : str
        A name from :data:`deep.upsampling.UPSAMPLING` (``"bilinear"``, ``"transposed4"``...):
        the class of every x2 decoder layer.
    width : int
        Channels of the VGG encoder's first stage (64 = VGG-16's widths); with the
        EfficientNet-Lite0 encoder, the channels of the skip decoder.
    encoder : {"vgg", "efficientnet_lite0"}
    pretrained : {None, "imagenet"}
        Start the encoder from ImageNet weights (EfficientNet-Lite0 only).
    freeze_at : {0, 2, 4, 8}
        With pretrained weights: encoder layers up to this stride are not trained.
    keep : {"best", "last"}
        Which epoch's weights the fit ends with: the best on ``val_dataset`` (the choice is
        then made on that split) or the last (the epoch count chosen elsewhere, e.g. on the
        selection split; ``val_dataset`` then only draws the learning curve).
    class_weight : {"median_frequency", "sqrt_median_frequency", "none"}
        Weights of the classes in the loss (:data:`deep.train.CLASS_WEIGHTS`).
    epochs, batch_size : int
    lr, weight_decay : float
    optimizer : {"adamw", "sgd"}
    crop : [int, int] or None
        Training crop (H, W) at the working resolution; None trains on whole (rescaled) images.
    scale : [float, float]
        Range of the random rescaling before cropping.
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    precision : {"auto", "bf16", "fp32"}
        Arithmetic of training and inference (:func:`deep.train.resolve_precision`): "auto" is
        bfloat16 autocast + channels-last where the device has native bfloat16 (AVX-512 BF16
        or AMX on the CPU), float32 elsewhere. It changes the weights, so it is part of the
        checkpoint key; the resolved value is recorded in the row.
    n_threads : int or None
        CPU threads torch uses in ``fit`` and ``predict_proba`` (None: torch's default). On a
        shared 2-core machine, 1 avoids the OpenMP oversubscription that made a 2-thread forward
        pass 60x slower in our measurements.
    checkpoint_dir : str or None
        Checkpoint cache (the runner passes ``runs/checkpoints``); None trains in a temporary
        folder, removed after the fit.
    resume : bool
        Reuse the checkpoints of an earlier fit with the same parameters and data.
    random_state : int
        Seeds initialisation, batch order, augmentation and dropout.
    """

    def __init__(
        self,
        arch: str = "fcn8s",
        upsampling: str = "bilinear",
        width: int = 32,
        epochs: int = 40,
        batch_size: int = 8,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        crop: list[int] | None = None,
        scale: list[float] | tuple[float, float] = (0.75, 1.25),
        device: str = "auto",
        precision: str = "auto",
        encoder: str = "vgg",
        pretrained: str | None = None,
        freeze_at: int = 0,
        keep: str = "best",
        class_weight: str = "median_frequency",
        n_threads: int | None = None,
        checkpoint_dir: str | None = None,
        resume: bool = True,
        random_state: int = 0,
    ) -> None:
        self.arch = arch
        self.upsampling = upsampling
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.crop = crop
        self.scale = scale
        self.device = device
        self.precision = precision
        self.encoder = encoder
        self.pretrained = pretrained
        self.freeze_at = freeze_at
        self.keep = keep
        self.class_weight = class_weight
        self.n_threads = n_threads
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.random_state = random_state

    # -- training ---------------------------------------------------------------------------
    def train_config(self) -> TrainConfig:
        """The :class:`~deep.train.TrainConfig` these parameters describe."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            crop=None if self.crop is None else (int(self.crop[0]), int(self.crop[1])),
            scale=(float(self.scale[0]), float(self.scale[1])),
            seed=self.random_state,
            precision=self.precision,
            keep=self.keep,
            class_weight=self.class_weight,
        )

    def checkpoint_key(self, dataset, val_dataset=None) -> dict:  # noqa: ANN001
        """What decides the trained weights: parameters (not device/resume) and the data."""
        params = self.get_params(deep=False)
        for key in ("device", "n_threads", "checkpoint_dir", "resume"):
            params.pop(key)

        def describe(ds) -> dict | None:  # noqa: ANN001
            if ds is None:
                return None
            return {
                "type": type(ds).__name__,
                "split": ds.split,
                "names": hashlib.sha256("\n".join(ds.names).encode()).hexdigest()[:16],
                "resolution": ds.resolution,
                "options": {k: getattr(ds, k) for k in ("size", "seed") if hasattr(ds, k)},
            }

        key = {"params": params, "train": describe(dataset), "val": describe(val_dataset)}
        world = process_group()[1]
        if world > 1:  # weights of N processes are not one process's (deep.ddp)
            key["world_size"] = world
        return key

    def checkpoint_folder(self, dataset, val_dataset=None, root=None) -> Path:  # noqa: ANN001
        """``<root>/fcn-<hash of checkpoint_key and the training code>`` (:mod:`deep.checkpoints`).

        ``root`` defaults to ``checkpoint_dir``.
        """
        root = self.checkpoint_dir if root is None else root
        if root is None:
            raise ValueError("checkpoint_folder needs a root: checkpoint_dir is None")
        # the code that trains is hashed in: a checkpoint of older code is retrained, never reused
        return checkpoint_folder(root, "fcn", self.checkpoint_key(dataset, val_dataset), __name__)

    def fit(self, dataset, val_dataset=None) -> FCN:  # noqa: ANN001
        with torch_threads(self.n_threads), checkpoint_root(self.checkpoint_dir) as root:
            return self._fit(dataset, val_dataset, root)

    def _fit(self, dataset, val_dataset, root: Path) -> FCN:  # noqa: ANN001
        torch.manual_seed(self.random_state)
        self.n_classes_ = dataset.n_classes
        self.device_ = resolve_device(self.device)
        # a setting the device cannot run fails here, before any data is loaded
        self.precision_ = resolve_precision(self.precision, self.device_)
        check_encoder(self.arch, self.encoder, self.pretrained, self.freeze_at)
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weight!r}"
            )
        train_data = load_arrays(dataset)
        val_data = load_arrays(val_dataset) if val_dataset is not None else None
        pixels = train_data.images.reshape(-1, 3).float()
        mean, std = pixels.mean(dim=0), pixels.std(dim=0)
        self.network_ = build_network(
            self.arch,
            self.upsampling,
            self.n_classes_,
            self.width,
            mean,
            std,
            self.encoder,
            self.pretrained,
            self.freeze_at,
        )
        self.checkpoint_dir_ = self.checkpoint_folder(dataset, val_dataset, root)
        # only a fit that loads a finished training reuses it; resume=False retrains
        self.checkpoint_reused_ = self.resume and _finished_before(self.checkpoint_dir_)
        if not self.resume:
            for name in ("last.pt", "best.pt", "meta.json"):
                (self.checkpoint_dir_ / name).unlink(missing_ok=True)
        log.info(
            "training %s/%s on %s%s (width %d, %.2f M parameters) on %s -> %s",
            self.arch,
            self.upsampling,
            self.encoder,
            f" ({self.pretrained})" if self.pretrained else "",
            self.width,
            sum(p.numel() for p in self.network_.parameters()) / 1e6,
            self.device_,
            self.checkpoint_dir_,
        )
        meta = {"key": self.checkpoint_key(dataset, val_dataset), "n_classes": self.n_classes_}
        result = train(
            self.network_,
            train_data,
            val_data,
            self.train_config(),
            self.checkpoint_dir_,
            device=str(self.device_),
            meta=meta,
        )
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.train_seconds_ = result.train_seconds
        self.train_processes_ = result.processes
        # where the weights were trained: a checkpoint trained on a GPU (deep/device.py) and
        # scored here says so in its row
        self.trained_on_ = result.device
        self.network_.eval()
        self.checkerboard_, self.checkerboard_window_ = self._checkerboard(val_dataset)
        return self

    def _checkerboard(self, val_dataset) -> tuple[float, list | None]:  # noqa: ANN001
        """Checkerboard index of the logits on a few val images, and one zoomed margin map.

        Part of what fitting learns about the network (like its val curve), so the upsampling
        study reads it from the row and needs no checkpoint of this machine.
        """
        if val_dataset is None or not len(val_dataset):
            return float("nan"), None
        picks = evenly_spaced(len(val_dataset), DIAGNOSTIC_IMAGES)
        values, window = [], None
        for i in picks:
            logits = self.predict_logits(val_dataset.image(int(i)))[0].numpy()
            if min(logits.shape[1:]) < 3 * 8:
                return float("nan"), None
            values.append(checkerboard_index(logits))
            if window is None:
                m = margin(logits)
                size = min(32, *m.shape)
                top, left = (m.shape[0] - size) // 2, (m.shape[1] - size) // 2
                window = np.round(m[top : top + size, left : left + size], 4).tolist()
        return float(np.mean(values)), window

    def fit_summary(self) -> dict:
        """Selected epoch, training cost, the validation curve and the checkerboard index."""
        return {
            "best_epoch": self.best_epoch_,
            "train_seconds": self.train_seconds_,
            "history": self.history_,
            "checkpoint": {
                "reused": self.checkpoint_reused_,
                "train_seconds": self.train_seconds_,
                "processes": self.train_processes_,
                "device": self.trained_on_,
            },  # fmt: skip
            "checkerboard": self.checkerboard_,
            "checkerboard_window": self.checkerboard_window_,
            "precision": self.precision_,
            "pretrained": self.pretrained,
        }

    # -- inference --------------------------------------------------------------------------
    def predict_logits(self, image: np.ndarray) -> torch.Tensor:
        """Class scores (1, C, H, W) of an HxWx3 uint8 image, float32 on the CPU."""
        x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch_threads(self.n_threads), torch.no_grad():
            return forward_logits(self.network_, x.to(self.device_), self.precision_).cpu()

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        proba = torch.softmax(self.predict_logits(image), dim=1)
        return np.ascontiguousarray(proba[0].permute(1, 2, 0).numpy())


def _finished_before(folder: Path) -> bool:
    """Whether ``folder`` already holds a finished training (the fit will only load it)."""
    try:
        return bool(json.loads((folder / "meta.json").read_text())["result"]["completed"])
    except (OSError, KeyError, ValueError, TypeError):
        return False


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (unchanged for None), then restore the count."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
