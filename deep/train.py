"""Training of the segmentation networks: balanced loss, augmentation, checkpoints, resume.

One loop for every network of ``deep/``:

* class-balanced cross-entropy (median frequency balancing, Eigen and Fergus 2015), void ignored;
* augmentation on the device: random scale, random crop (padded with void), horizontal flip;
* AdamW or SGD (momentum), linear warm-up then cosine decay, stepped every iteration;
* mixed precision on CUDA (bfloat16 where supported, else float16 with a gradient scaler);
* a checkpoint after every epoch (model, optimiser, schedule, scaler, history), written
  atomically, so a killed run resumes where it stopped. Resuming is *exact*: every random draw of
  epoch ``e`` (order, augmentation, dropout) comes from generators seeded by ``(seed, e)``, so
  nothing random has to be carried over;
* validation mIoU after every epoch through :class:`bench.metrics.ConfusionMatrix`, and the best
  epoch's weights kept apart (``best.pt``).

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bench.metrics import ConfusionMatrix

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a training run (and so its checkpoint folder)."""

    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # "adamw" or "sgd"
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    crop: tuple[int, int] | None = None  # (H, W) of training crops; None = the working size
    scale: tuple[float, float] = (0.75, 1.25)
    hflip: bool = True
    seed: int = 0


@dataclass
class ArrayData:
    """A split held in memory: images uint8 (N, H, W, 3), labels uint8 (N, H, W)."""

    images: torch.Tensor
    labels: torch.Tensor
    n_classes: int
    ignore_index: int

    def __len__(self) -> int:
        return len(self.images)


def load_arrays(dataset) -> ArrayData:  # noqa: ANN001 - any SegmentationDataset
    """Read a whole split once (decoding PNGs every epoch would cost more than training)."""
    images, labels = [], []
    for image, label, _ in tqdm(dataset, desc=f"load {dataset.split}", unit="img", leave=False):
        images.append(image)
        labels.append(label)
    return ArrayData(
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(labels)),
        dataset.n_classes,
        dataset.ignore_index,
    )


def median_frequency_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Median frequency balancing: ``w_c = median(freq) / freq_c``.

    As in SegNet, ``freq_c`` is the pixels of class c divided by the labelled pixels of the
    images in which c appears; void pixels are not counted. A class absent from every image gets
    weight 0 (it cannot be learnt anyway).

    Parameters
    ----------
    labels : Tensor of uint8, shape (N, H, W)
    n_classes : int

    Returns
    -------
    Tensor of float32, shape (n_classes,)
    """
    flat = labels.reshape(len(labels), -1).long()
    counts = torch.stack([torch.bincount(row, minlength=256)[:n_classes] for row in flat])
    labelled = counts.sum(dim=1, keepdim=True)
    present = counts > 0
    pixels = counts.sum(dim=0).double()
    exposure = (labelled * present).sum(dim=0).double()
    freq = torch.where(exposure > 0, pixels / exposure.clamp(min=1), torch.zeros_like(pixels))
    seen = freq > 0
    weights = torch.zeros(n_classes, dtype=torch.float64)
    weights[seen] = freq[seen].median() / freq[seen]
    return weights.float()


def augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    rng: np.random.Generator,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, crop and flip of a batch (images float (N, 3, H, W), labels long (N, H, W)).

    Crops larger than the scaled image are padded: image with 0, label with ``ignore_index``,
    so padding is never learnt.
    """
    h, w = images.shape[-2:]
    ch, cw = cfg.crop if cfg.crop is not None else (h, w)
    out_images, out_labels = [], []
    for image, label in zip(images, labels, strict=True):
        s = rng.uniform(*cfg.scale)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
        pad_h, pad_w = max(0, ch - size[0]), max(0, cw - size[1])
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            label = F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index)
        top = int(rng.integers(0, label.shape[0] - ch + 1))
        left = int(rng.integers(0, label.shape[1] - cw + 1))
        image = image[:, top : top + ch, left : left + cw]
        label = label[top : top + ch, left : left + cw]
        if cfg.hflip and rng.random() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        out_images.append(image)
        out_labels.append(label)
    return torch.stack(out_images), torch.stack(out_labels)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision type on CUDA (bfloat16 needs no loss scaling); None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _schedule(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor of step t: linear warm-up, then cosine decay to zero."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, int(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=True,
        )
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 8
) -> torch.Tensor:
    """Class scores (N, C, H, W), float32 on the CPU, of uint8 images (N, H, W, 3)."""
    model.eval()
    dtype = _autocast_dtype(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device).permute(0, 3, 1, 2).float()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out.append(model(batch).float().cpu())
    return torch.cat(out)


def evaluate(
    model: nn.Module, data: ArrayData, device: torch.device, batch_size: int = 8
) -> dict[str, float | list[float]]:
    """Scores of ``model`` on ``data`` (at its working resolution) by the one evaluator."""
    cm = ConfusionMatrix(data.n_classes, data.ignore_index, keep_per_image=False)
    for start in range(0, len(data), batch_size):
        logits = predict_logits(model, data.images[start : start + batch_size], device, batch_size)
        cm.update(logits.argmax(dim=1).numpy(), data.labels[start : start + batch_size].numpy())
    return cm.scores()


@dataclass
class TrainResult:
    """What :func:`train` leaves behind (also in ``meta.json`` of the checkpoint folder)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_miou: float = float("nan")
    train_seconds: float = 0.0
    device: str = "cpu"
    completed: bool = False


def _save(path: Path, state: dict) -> None:
    """Write a checkpoint atomically: a kill mid-write leaves the previous one intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint safely (tensors and plain values only)."""
    return torch.load(path, map_location=device, weights_only=True)


def train(
    model: nn.Module,
    train_data: ArrayData,
    val_data: ArrayData | None,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    device: str = "auto",
    stop_after: int | None = None,
    meta: dict | None = None,
) -> TrainResult:
    """Train ``model`` in place, resuming from ``checkpoint_dir/last.pt`` when it exists.

    On return the model holds the best validation epoch's weights (the last epoch's without
    validation data).

    Parameters
    ----------
    model : nn.Module
        Maps float images (N, 3, H, W) in 0..255 to class scores (N, C, H, W).
    train_data, val_data : ArrayData
    cfg : TrainConfig
    checkpoint_dir : Path
        Holds ``last.pt`` (everything needed to resume), ``best.pt`` (best weights) and
        ``meta.json`` (history, timings, device: readable without torch).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    stop_after : int, optional
        Stop once this epoch index is done, as a kill would (for tests and time-boxed runs).
    meta : dict, optional
        Extra description written into ``meta.json`` (the method's parameters).

    Returns
    -------
    TrainResult
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        # Fixed input sizes: let cuDNN pick the fastest kernels (not bit-exact across runs).
        torch.backends.cudnn.benchmark = True
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    model.to(dev)
    weights = median_frequency_weights(train_data.labels, train_data.n_classes).to(dev)
    criterion = nn.CrossEntropyLoss(weight=weights, ignore_index=train_data.ignore_index)
    bs = min(cfg.batch_size, len(train_data))
    steps = len(train_data) // bs  # drop the last partial batch: batch norm dislikes tiny ones
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, steps))
    dtype = _autocast_dtype(dev)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    result = TrainResult(device=str(dev))

    last = checkpoint_dir / "last.pt"
    start_epoch = 0
    if last.is_file():
        state = load_checkpoint(last, dev)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        result = TrainResult(**json.loads(state["result"]))
        start_epoch = state["epoch"] + 1
        log.info("resuming %s at epoch %d of %d", checkpoint_dir.name, start_epoch, cfg.epochs)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout of this epoch
        model.train()
        order = rng.permutation(len(train_data))
        total_loss = 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        for step in bar:
            index = torch.from_numpy(order[step * bs : (step + 1) * bs])
            images = train_data.images[index].to(dev).permute(0, 3, 1, 2).float()
            labels = train_data.labels[index].to(dev).long()
            images, labels = augment(images, labels, cfg, rng, train_data.ignore_index)
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                loss = criterion(model(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        entry = {"epoch": epoch, "loss": total_loss / max(1, steps)}
        if val_data is not None:
            s = evaluate(model, val_data, dev, bs)
            entry.update(val_miou=s["miou"], val_mean_acc=s["mean_acc"])
            if not result.best_miou >= s["miou"]:  # also true while best is NaN
                result.best_miou, result.best_epoch = s["miou"], epoch
                _save(checkpoint_dir / "best.pt", {"model": model.state_dict(), "epoch": epoch})
        result.train_seconds += time.perf_counter() - t0
        entry["seconds"] = time.perf_counter() - t0
        result.history.append(entry)
        result.completed = epoch == cfg.epochs - 1
        log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, _format(entry))
        _save(
            last,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                # JSON text: plain values load under weights_only whatever the history holds
                "result": json.dumps(asdict(result)),
            },
        )
        _write_meta(checkpoint_dir, result, cfg, meta)
        if stop_after is not None and epoch >= stop_after:
            break

    if val_data is not None and (checkpoint_dir / "best.pt").is_file():
        model.load_state_dict(load_checkpoint(checkpoint_dir / "best.pt", dev)["model"])
    return result


def _format(entry: dict) -> str:
    text = f"loss {entry['loss']:.4f}"
    if "val_miou" in entry:
        text += f", val mIoU {100 * entry['val_miou']:.1f} %"
    return text


def _write_meta(
    checkpoint_dir: Path, result: TrainResult, cfg: TrainConfig, meta: dict | None
) -> None:
    data = {"train": asdict(cfg), "result": asdict(result), **(meta or {})}
    tmp = checkpoint_dir / "meta.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, checkpoint_dir / "meta.json")
