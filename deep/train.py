"""Training of the segmentation networks: balanced loss, augmentation, checkpoints, resume.

One loop for every network of ``deep/``:

* class-balanced cross-entropy (median frequency balancing, Eigen and Fergus 2015), void ignored;
* augmentation on the device: random scale, random crop (padded with void), horizontal flip;
* AdamW or SGD (momentum), linear warm-up then cosine decay, stepped every iteration;
* mixed precision (``TrainConfig.precision``): bfloat16 autocast with channels-last tensors on
  CUDA with bfloat16 and on a CPU with native bfloat16 dot products (AVX-512 BF16 or AMX),
  float16 with a gradient scaler on older CUDA devices, float32 elsewhere; the loss is always
  computed in float32;
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

import functools
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
from deep.checkpoints import load_checkpoint, save_checkpoint
from deep.ddp import average_buffers, barrier, is_first, process_group, sum_over_processes, wrap

log = logging.getLogger(__name__)

#: Values of ``TrainConfig.precision``.
PRECISIONS = ("auto", "bf16", "fp32")
#: Autocast type of each resolved precision (None: plain float32).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": None,
}


@dataclass
class TrainConfig:
    """Everything that decides a training run (and so its checkpoint folder).

    ``precision`` (one of :data:`PRECISIONS`) does not change what a run means, but it does
    change the weights it ends with, so it belongs here and is recorded in ``meta.json``; see
    :func:`resolve_precision` for what ``"auto"`` becomes.
    """

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
    precision: str = "auto"  # "auto", "bf16" or "fp32"
    keep: str = "best"  # the weights train() ends with: "best" val epoch or "last" epoch
    class_weight: str = "median_frequency"  # see CLASS_WEIGHTS


#: Loss weighting of the classes: SegNet's median-frequency balancing, its square root (half
#: the boost of rare classes: fewer false positives of them, which IoU punishes and class
#: accuracy does not), or plain cross-entropy.
CLASS_WEIGHTS = ("median_frequency", "sqrt_median_frequency", "none")


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
    """Read a whole split once (decoding PNGs every epoch would cost more than training).

    Images of different sizes (Stanford Background has 51) are placed at the top left of one
    canvas of the largest height and width: image filled with 0, label with the ignore index,
    so the fill is never learnt nor scored (as :func:`augment` pads crops). A split of one size
    is stored as it is.
    """
    images, labels = [], []
    for image, label, _ in tqdm(dataset, desc=f"load {dataset.split}", unit="img", leave=False):
        images.append(image)
        labels.append(label)
    height = max(im.shape[0] for im in images)
    width = max(im.shape[1] for im in images)
    canvas = np.zeros((len(images), height, width, 3), np.uint8)
    canvas_labels = np.full((len(images), height, width), dataset.ignore_index, np.uint8)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        canvas[i, : image.shape[0], : image.shape[1]] = image
        canvas_labels[i, : label.shape[0], : label.shape[1]] = label
    return ArrayData(
        torch.from_numpy(canvas),
        torch.from_numpy(canvas_labels),
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


def class_weights(kind: str, labels: torch.Tensor, n_classes: int) -> torch.Tensor | None:
    """The loss weights ``kind`` (one of :data:`CLASS_WEIGHTS`) gives, None for unweighted.

    Raises
    ------
    ValueError
        When ``kind`` is not one of :data:`CLASS_WEIGHTS`.
    """
    if kind not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, got {kind!r}")
    if kind == "none":
        return None
    weights = median_frequency_weights(labels, n_classes)
    return weights.sqrt() if kind == "sqrt_median_frequency" else weights


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


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor listed in ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 dot products (``avx512_bf16`` or ``amx_bf16``).

    Without them oneDNN emulates bfloat16 with float32 arithmetic plus conversions, which is
    slower than plain float32, so only these flags make ``"auto"`` pick bfloat16. Read from
    ``/proc/cpuinfo``: elsewhere (no such file) the answer is False.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(cpu_flags(text) & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """What the ``precision`` setting means on ``device``: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    ``"auto"`` is bfloat16 on CUDA devices that support it and on CPUs with native bfloat16
    (:func:`cpu_has_bf16`), float16 (with a gradient scaler) on other CUDA devices, float32
    otherwise.

    Raises
    ------
    ValueError
        For an unknown setting, or ``"bf16"`` on a device without bfloat16 support.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}"
        )
    device = torch.device(device)
    if precision == "fp32":
        return "fp32"
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not bf16:
            raise ValueError(
                "precision 'bf16' needs a CUDA device with bfloat16 support; this one lacks it: "
                "use precision 'auto' (float16) or 'fp32'"
            )
        return "bf16" if bf16 else "fp16"
    if device.type == "cpu":
        if cpu_has_bf16():
            return "bf16"
        if precision == "bf16":
            raise ValueError(
                "precision 'bf16' needs a CPU with native bfloat16 (avx512_bf16 or amx_bf16 in "
                "/proc/cpuinfo); this CPU lacks AVX-512 BF16/AMX: use precision 'auto' or 'fp32'"
            )
        return "fp32"
    if precision == "bf16":
        raise ValueError(f"precision 'bf16' is not supported on device {device.type!r}")
    return "fp32"


def _legacy_precision(device: torch.device) -> str:
    """The precision of a checkpoint written before precision was recorded (the old rule)."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def forward_logits(model: nn.Module, images: torch.Tensor, precision: str) -> torch.Tensor:
    """``model(images)`` in a resolved ``precision``, as float32 class scores.

    Reduced precision runs under autocast with channels-last inputs: oneDNN's (and cuDNN's)
    fast bfloat16 convolutions work on NHWC, and an NCHW input would be reordered at every
    layer. Everything after the scores (the loss, softmax) stays in float32.
    """
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return model(images).float()
    images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(images.device.type, dtype=dtype):
        return model(images).float()


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


def make_optimizer(model: nn.Module, cfg: TrainConfig, precision: str) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` for a run in the resolved ``precision``.

    The reduced-precision paths use the fused AdamW kernel (one pass over all parameters:
    about 5x faster than the per-tensor loop on the CPU, 4 % of a width-8 FCN-8s step). It
    rounds differently, so float32 keeps the per-tensor loop and its weights stay those of
    the code before precision existed.
    """
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            fused=True if precision != "fp32" else None,
        )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=True,
        )
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 8,
    precision: str = "auto",
) -> torch.Tensor:
    """Class scores (N, C, H, W), float32 on the CPU, of uint8 images (N, H, W, 3).

    ``precision`` is a :data:`PRECISIONS` setting or an already resolved value.
    """
    model.eval()
    # "fp16" is only ever a resolved value; everything else goes through the checks once more
    precision = precision if precision == "fp16" else resolve_precision(precision, device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device).permute(0, 3, 1, 2).float()
        out.append(forward_logits(model, batch, precision).cpu())
    return torch.cat(out)


def evaluate(
    model: nn.Module,
    data: ArrayData,
    device: torch.device,
    batch_size: int = 8,
    precision: str = "auto",
) -> dict[str, float | list[float]]:
    """Scores of ``model`` on ``data`` (at its working resolution) by the one evaluator.

    In a process group (:mod:`deep.ddp`) each process scores every world-th batch, the same
    batches one process would form, and the confusion counts are summed: the scores are one
    process's on the same weights, exactly.
    """
    rank, world = process_group()
    cm = ConfusionMatrix(data.n_classes, data.ignore_index, keep_per_image=False)
    for k, start in enumerate(range(0, len(data), batch_size)):
        if k % world != rank:
            continue
        images = data.images[start : start + batch_size]
        logits = predict_logits(model, images, device, batch_size, precision)
        cm.update(logits.argmax(dim=1).numpy(), data.labels[start : start + batch_size].numpy())
    if world > 1:
        cm.total = sum_over_processes(torch.from_numpy(cm.total)).numpy()
    return cm.scores()


@dataclass
class TrainResult:
    """What :func:`train` leaves behind (also in ``meta.json`` of the checkpoint folder)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_miou: float = float("nan")
    train_seconds: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"  # resolved: "bf16", "fp16" or "fp32"
    completed: bool = False
    processes: int = 1  # data-parallel processes that trained it (deep.ddp)


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

    On return the model holds the best validation epoch's weights when ``cfg.keep`` is
    ``"best"``, the last epoch's when it is ``"last"`` or there is no validation data (which
    then only records the learning curve).

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
        ``"auto"``, ``"cpu"``, ``"cuda"``...; ``cfg.precision`` is resolved for it
        (:func:`resolve_precision`) and the result recorded in ``TrainResult.precision``.
    stop_after : int, optional
        Stop once this epoch index is done, as a kill would (for tests and time-boxed runs).
    meta : dict, optional
        Extra description written into ``meta.json`` (the method's parameters).

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        When ``cfg.precision`` cannot run on the device, or the checkpoint being resumed was
        trained in another precision (continuing would mix the two in one run).
    """
    dev = resolve_device(device)
    precision = resolve_precision(cfg.precision, dev)
    if dev.type == "cuda":
        # Fixed input sizes: let cuDNN pick the fastest kernels (not bit-exact across runs).
        torch.backends.cudnn.benchmark = True
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    model.to(dev)
    if precision != "fp32":
        # NHWC weights to match the channels-last inputs of forward_logits (no reorders)
        model.to(memory_format=torch.channels_last)
    weights = class_weights(cfg.class_weight, train_data.labels, train_data.n_classes)
    criterion = nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(dev), ignore_index=train_data.ignore_index
    )
    bs = min(cfg.batch_size, len(train_data))
    steps = len(train_data) // bs  # drop the last partial batch: batch norm dislikes tiny ones
    rank, world = process_group()
    if bs % world:
        raise ValueError(f"batch_size {bs} must be a multiple of the {world} processes")
    if cfg.keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {cfg.keep!r}")
    optimizer = make_optimizer(model, cfg, precision)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, steps))
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    result = TrainResult(device=str(dev), precision=precision, processes=world)

    last = checkpoint_dir / "last.pt"
    start_epoch = 0
    if last.is_file():
        state = load_checkpoint(last, dev)
        recorded = json.loads(state["result"]).get("precision", _legacy_precision(dev))
        if recorded != precision:
            raise ValueError(
                f"{last} was trained with precision {recorded!r} but precision "
                f"{cfg.precision!r} is {precision!r} here: resuming would mix the two; set "
                f"precision to {'auto' if recorded == 'fp16' else recorded!r} or delete the folder"
            )
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            # torch's message lists every mismatching tensor; the user needs the file
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = (lines[1] if len(lines) > 1 else lines[0])[:160] if lines else ""
            raise ValueError(
                f"{last} does not fit this network ({detail}); delete the folder to retrain"
            ) from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        result = TrainResult(**json.loads(state["result"]))
        start_epoch = state["epoch"] + 1
        log.info("resuming %s at epoch %d of %d", checkpoint_dir.name, start_epoch, cfg.epochs)

    # DDP only when there is an epoch to train: a finished checkpoint is loaded by one process
    # (deep.ddp scores in rank 0 alone), and wrapping is a collective call
    net = wrap(model, dev) if start_epoch < cfg.epochs else model
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout of this epoch
        model.train()
        order = rng.permutation(len(train_data))
        total_loss = 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        for step in bar:
            # a process group shares each global batch (DistributedSampler's split of it)
            index = torch.from_numpy(order[step * bs : (step + 1) * bs][rank::world])
            images = train_data.images[index].to(dev).permute(0, 3, 1, 2).float()
            labels = train_data.labels[index].to(dev).long()
            images, labels = augment(images, labels, cfg, rng, train_data.ignore_index)
            loss = criterion(forward_logits(net, images, precision), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        average_buffers(model)  # one network in every process before it is validated or saved
        if world > 1:
            total_loss = float(sum_over_processes(torch.tensor([total_loss]))[0]) / world
        entry = {"epoch": epoch, "loss": total_loss / max(1, steps)}
        if val_data is not None:
            s = evaluate(model, val_data, dev, bs, precision)
            entry.update(val_miou=s["miou"], val_mean_acc=s["mean_acc"])
            if not result.best_miou >= s["miou"]:  # also true while best is NaN
                result.best_miou, result.best_epoch = s["miou"], epoch
                if is_first():
                    save_checkpoint(
                        checkpoint_dir / "best.pt", {"model": model.state_dict(), "epoch": epoch}
                    )
        result.train_seconds += time.perf_counter() - t0
        entry["seconds"] = time.perf_counter() - t0
        result.history.append(entry)
        result.completed = epoch == cfg.epochs - 1
        log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, _format(entry))
        if is_first():  # one writer in a process group; the others wait for the files
            save_checkpoint(
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
        barrier()
        if stop_after is not None and epoch >= stop_after:
            break

    if cfg.keep == "best" and val_data is not None and (checkpoint_dir / "best.pt").is_file():
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
    tmp = checkpoint_dir / f".meta.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, checkpoint_dir / "meta.json")
