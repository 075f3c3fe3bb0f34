"""Sliding-window CNN: a patch classifier applied to the square crop around every pixel.

The classifier (:class:`PatchNet`) labels the centre pixel of a ``patch_size`` crop with a few
valid (unpadded) conv + BN + ReLU + max-pool blocks followed by fully connected layers. It is
trained on crops sampled from the training split with class balancing. At test time it labels
an image by classifying the crop around every pixel (``stride=1``), in batches, the image
reflect-padded at its borders; ``stride=s`` classifies every s-th pixel and interpolates the
scores bilinearly. This is the expensive baseline that :mod:`deep.patch_fcn` makes fully
convolutional.

Crop geometry: the crop "around" pixel ``(y, x)`` spans rows ``y - a .. y - a + P - 1`` (and
likewise columns) with ``P = patch_size`` and ``a = P // 2``; the image is reflect-padded by
``a`` before and ``P - 1 - a`` after, so the crop of pixel ``(y, x)`` starts at ``(y, x)`` of
the padded image.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import RegularGridInterpolator
from torch import nn
from tqdm import tqdm

from bench.datasets.root import REPO_ROOT
from bench.method import SegmentationMethod
from bench.provenance import code_hash

log = logging.getLogger(__name__)

#: Per-channel mean and standard deviation of the input (0..1 scale). Fixed constants rather
#: than statistics of the training set, so that the same image always gives the same input.
MEAN = (0.45, 0.45, 0.45)
STD = (0.25, 0.25, 0.25)
#: Parameters that decide the trained weights: the checkpoint cache key. Inference-only
#: parameters (stride, batch size, device, folders) are left out, so every method built with the
#: same training parameters (sliding window at any stride, its fully convolutional twin) shares
#: one trained network.
TRAIN_PARAMS = (
    "patch_size", "channels", "hidden", "dropout", "epochs", "crops_per_epoch",
    "train_batch_size", "lr", "weight_decay", "class_balance", "candidates_per_class",
    "flip", "val_crops_per_class", "random_state",
)  # fmt: skip
_CHECKPOINT_VERSION = 1


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


def sample_positions(n: int, stride: int) -> np.ndarray:
    """Every ``stride``-th index of ``0..n-1``, and ``n-1`` so that nothing is extrapolated."""
    pos = np.arange(0, n, stride)
    if pos[-1] != n - 1:
        pos = np.append(pos, n - 1)
    return pos


def resolve_device(device: str | None) -> torch.device:
    """``device``, or CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SlidingWindowCNN(SegmentationMethod):
    """Patch CNN classifying the crop around every pixel (or every ``stride``-th pixel).

    Parameters
    ----------
    patch_size : int
        Side of the square crop (32, 40, 48... with the default three blocks).
    channels : tuple of int
        Output channels of the conv blocks.
    hidden : int
        Units of the hidden fully connected layer.
    dropout : float
    epochs : int
        Training epochs; the epoch with the best validation score is kept.
    crops_per_epoch : int
        Training crops drawn (class-balanced, with replacement) per epoch.
    train_batch_size : int
    lr, weight_decay : float
        AdamW.
    class_balance : float
        Class ``c`` is sampled with probability proportional to ``freq_c ** (1 - class_balance)``
        (``freq_c`` its share of training pixels): 1 samples every class equally, 0 as often
        as it occurs. CamVid's small classes dominate mIoU, hence balancing.
    candidates_per_class : int
        Pixels of each class drawn per training image to form the pool crops are drawn from.
    flip : bool
        Mirror half the training crops.
    val_crops_per_class : int
        Class-balanced validation crops scored after each epoch (mean class accuracy) to
        choose the epoch; 0 keeps the last epoch.
    stride : int
        Inference: classify every ``stride``-th pixel and interpolate the scores bilinearly.
    batch_size : int
        Inference: crops per forward pass.
    checkpoint_dir : str or None
        Checkpoint cache; default ``runs/checkpoints`` of the repository. Each set of training
        parameters and training data has its own sub-folder (a hash), saved after every epoch:
        a killed fit resumes from the last epoch, and a finished one is loaded, not redone.
    device : str or None
        Torch device; default CUDA when available, else the CPU.
    random_state : int
        Seeds initialisation, crop sampling and dropout.
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
        stride: int = 1,
        batch_size: int = 2048,
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
        self.stride = stride
        self.batch_size = batch_size
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.random_state = random_state

    # -- training ---------------------------------------------------------------------------
    def fit(self, dataset, val_dataset=None) -> SlidingWindowCNN:  # noqa: ANN001
        """Train the patch classifier (or load the finished checkpoint of the same training)."""
        self.net_, self.history_, self.trained_ = train_patch_net(
            {p: getattr(self, p) for p in TRAIN_PARAMS},
            dataset,
            val_dataset,
            checkpoint_dir=self.checkpoint_dir,
            device=resolve_device(self.device),
        )
        self.n_classes_ = dataset.n_classes
        return self

    def fit_summary(self) -> dict:
        """Whether the weights were trained now or loaded, and what training them cost."""
        return {"checkpoint": checkpoint_summary(self.history_, self.trained_),
                "history": self.history_}  # fmt: skip

    # -- inference --------------------------------------------------------------------------
    def decision_function(self, image: np.ndarray) -> np.ndarray:
        """Class scores (logits) of every pixel, float32 (H, W, C).

        At ``stride`` 1 every pixel's own crop is classified; otherwise the crops of every
        ``stride``-th row and column (and the last ones) are, and the scores in between are
        interpolated bilinearly.
        """
        if int(self.stride) != self.stride or self.stride < 1:
            raise ValueError(f"stride must be a positive integer, got {self.stride!r}")
        h, w = image.shape[:2]
        ys, xs = sample_positions(h, self.stride), sample_positions(w, self.stride)
        scores = self._classify_grid(image, ys, xs)
        if self.stride == 1:
            return scores
        interp = RegularGridInterpolator((ys, xs), scores, method="linear")
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        points = np.stack([yy.ravel(), xx.ravel()], axis=1)
        return interp(points).reshape(h, w, -1).astype(np.float32)

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        scores = torch.from_numpy(self.decision_function(image))
        return torch.softmax(scores, dim=-1).numpy()

    def _classify_grid(self, image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Scores (len(ys), len(xs), C) of the crops around pixels ``ys x xs``."""
        device = next(self.net_.parameters()).device
        padded = pad_for_patches(normalise(image), self.patch_size).to(device)
        p = self.patch_size
        # A strided view (3, H, W, P, P) of every crop: nothing is copied until a batch of rows
        # is gathered, so memory stays at one batch of crops.
        windows = padded.unfold(1, p, 1).unfold(2, p, 1)
        xs_t = torch.as_tensor(xs, device=device)
        rows_per_batch = max(1, self.batch_size // len(xs))
        out = np.empty((len(ys), len(xs), self.n_classes_), dtype=np.float32)
        self.net_.eval()
        with torch.inference_mode():
            starts = range(0, len(ys), rows_per_batch)
            # stride 1 at 360x480 takes minutes per image: show progress on long runs only
            for start in tqdm(starts, desc="windows", leave=False, disable=len(starts) < 20):
                rows = torch.as_tensor(ys[start : start + rows_per_batch], device=device)
                crops = windows[:, rows[:, None], xs_t[None, :]]  # (3, r, nx, P, P)
                crops = crops.permute(1, 2, 0, 3, 4).reshape(-1, 3, p, p)
                scores = self.net_(crops).float().cpu().numpy()
                out[start : start + len(rows)] = scores.reshape(len(rows), len(xs), -1)
        return out


# -- training, shared with deep.patch_fcn ------------------------------------------------------
def train_patch_net(
    params: dict,
    dataset,  # noqa: ANN001
    val_dataset=None,  # noqa: ANN001
    checkpoint_dir: str | Path | None = None,
    device: torch.device | None = None,
) -> tuple[PatchNet, list[dict], bool]:
    """Train a :class:`PatchNet` with ``params`` (:data:`TRAIN_PARAMS`), or load its checkpoint.

    Returns
    -------
    net : PatchNet
        In eval mode, on ``device``, with the weights of the best validation epoch.
    history : list of dict
        Per epoch: training loss and validation score.
    trained : bool
        False when a finished checkpoint was loaded and no epoch ran.
    """
    device = device or resolve_device(None)
    path = checkpoint_path(params, dataset, val_dataset, checkpoint_dir)
    torch.manual_seed(params["random_state"])
    net = PatchNet(
        dataset.n_classes, params["patch_size"], params["channels"], params["hidden"],
        params["dropout"],
    ).to(device)  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    state = {"epoch": 0, "history": [], "best_score": -1.0, "best_model": None}
    if path.is_file():
        ckpt = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        state = {k: ckpt[k] for k in state}
        log.info("checkpoint %s: epoch %d of %d", path, state["epoch"], params["epochs"])
    trained = state["epoch"] < params["epochs"]
    if trained:
        crops = CropSampler(dataset, params, device)
        val = CropSampler(val_dataset, params, device) if val_dataset is not None else None
        val_set = val.balanced_set(params["val_crops_per_class"]) if val is not None else None
        for epoch in range(state["epoch"], params["epochs"]):
            t0 = time.perf_counter()
            loss = _train_epoch(net, opt, crops, params, epoch)
            score = _val_score(net, val_set, dataset.n_classes) if val_set else float("nan")
            log.info("epoch %d: loss %.4f, val class accuracy %.4f", epoch + 1, loss, score)
            state["history"].append({"epoch": epoch + 1, "loss": loss, "val_mean_acc": score,
                                     "seconds": time.perf_counter() - t0})  # fmt: skip
            if val_set is None or score > state["best_score"]:
                state["best_score"] = score if val_set else -1.0
                state["best_model"] = copy.deepcopy(net.state_dict())
            state["epoch"] = epoch + 1
            _save(path, net, opt, state)
    net.load_state_dict(state["best_model"])
    return net.eval(), state["history"], trained


def checkpoint_summary(history: list[dict], trained: bool) -> dict:
    """``{"reused": bool, "train_seconds": float}``: a loaded checkpoint keeps its real cost.

    ``train_seconds`` sums the epochs' times recorded in the checkpoint's history, so a row
    whose fit only loaded finished weights still says what training them took.
    """
    seconds = sum(float(h.get("seconds", float("nan"))) for h in history)
    return {"reused": not trained, "train_seconds": seconds}


def checkpoint_path(
    params: dict,
    dataset,  # noqa: ANN001
    val_dataset=None,  # noqa: ANN001
    checkpoint_dir: str | Path | None = None,
) -> Path:
    """``<checkpoint_dir>/<hash of training parameters and data>/last.pt``."""
    key = {
        "version": _CHECKPOINT_VERSION,
        # the training code itself: a checkpoint made by older code is never reused
        "code": code_hash("baselines.sliding_window"),
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "train": _data_key(dataset),
        "val": _data_key(val_dataset) if val_dataset is not None else None,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    root = Path(checkpoint_dir) if checkpoint_dir else REPO_ROOT / "runs" / "checkpoints"
    return root / f"sliding_window-{digest[:16]}" / "last.pt"


def _data_key(dataset) -> dict:  # noqa: ANN001
    """What identifies a training set: its description, its names and two of its images."""
    first, last = dataset.image(0), dataset.image(len(dataset) - 1)
    content = hashlib.sha256(first.tobytes() + last.tobytes()).hexdigest()[:16]
    names = hashlib.sha256("\n".join(dataset.names).encode()).hexdigest()[:16]
    return {"repr": repr(dataset), "names": names, "content": content}


def _save(path: Path, net: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Write the checkpoint atomically: a kill mid-write leaves the previous epoch's file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            **state,
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        tmp,
    )
    os.replace(tmp, path)


def _train_epoch(
    net: PatchNet, opt: torch.optim.Optimizer, crops: CropSampler, params: dict, epoch: int
) -> float:
    """One epoch over freshly drawn crops; the mean training loss."""
    # The crops of epoch e depend on (seed, e) only, so a resumed fit draws what the killed one
    # would have drawn.
    rng = np.random.default_rng([params["random_state"], epoch])
    x_idx, labels = crops.draw(params["crops_per_epoch"], rng)
    flips = rng.random(len(labels)) < 0.5 if params["flip"] else np.zeros(len(labels), bool)
    net.train()
    total, n = 0.0, 0
    bs = params["train_batch_size"]
    bar = tqdm(range(0, len(labels), bs), desc=f"patch CNN epoch {epoch + 1}", leave=False)
    for start in bar:
        sl = slice(start, start + bs)
        x = crops.gather(x_idx[sl], flips[sl])
        y = torch.as_tensor(labels[sl], device=x.device, dtype=torch.long)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(y)
        n += len(y)
        bar.set_postfix(loss=f"{total / n:.3f}")
    return total / max(n, 1)


def _val_score(net: PatchNet, val_set: tuple, n_classes: int) -> float:
    """Mean class accuracy of the centre pixels of the fixed validation crops."""
    crops, labels = val_set
    net.eval()
    preds = []
    with torch.inference_mode():
        for start in range(0, len(crops), 512):
            preds.append(net(crops[start : start + 512]).argmax(1).cpu().numpy())
    pred = np.concatenate(preds)
    accs = [np.mean(pred[labels == c] == c) for c in range(n_classes) if np.any(labels == c)]
    return float(np.mean(accs))


class CropSampler:
    """Class-balanced crops of a dataset's reflect-padded images (uint8, kept in memory).

    A pool of up to ``candidates_per_class`` pixels of every class in every image is drawn once
    (seeded); crops are then drawn from the pool class by class.
    """

    def __init__(self, dataset, params: dict, device: torch.device) -> None:  # noqa: ANN001
        self.p = params["patch_size"]
        self.device = device
        rng = np.random.default_rng([params["random_state"], 12345])
        images, pool = [], [[] for _ in range(dataset.n_classes)]
        counts = np.zeros(dataset.n_classes, dtype=np.int64)
        for i, (image, label, _) in enumerate(
            tqdm(dataset, desc=f"crops from {dataset.split}", leave=False)
        ):
            images.append(pad_for_patches(torch.from_numpy(image).permute(2, 0, 1), self.p))
            flat = label.ravel()
            counts += np.bincount(flat, minlength=256)[: dataset.n_classes]
            for c in np.unique(flat):
                if c >= dataset.n_classes:
                    continue  # void
                where = np.flatnonzero(flat == c)
                take = rng.choice(where, min(len(where), params["candidates_per_class"]), False)
                ys, xs = np.divmod(take, label.shape[1])
                pool[c].append(np.stack([np.full_like(ys, i), ys, xs], axis=1))
        self.images = torch.stack(images).to(device)  # (N, 3, H+P-1, W+P-1) uint8
        self.width = label.shape[1]
        self.pool = [np.concatenate(p) if p else np.zeros((0, 3), np.int64) for p in pool]
        freq = counts / max(counts.sum(), 1)
        weight = np.where(freq > 0, freq, 0.0) ** (1.0 - params["class_balance"])
        weight[counts == 0] = 0.0
        self.class_prob = weight / weight.sum()

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` crops: their (image, y, x) rows and centre labels, shuffled."""
        per_class = rng.multinomial(n, self.class_prob)
        idx, labels = [], []
        for c, k in enumerate(per_class):
            if k:
                idx.append(self.pool[c][rng.integers(0, len(self.pool[c]), k)])
                labels.append(np.full(k, c))
        idx, labels = np.concatenate(idx), np.concatenate(labels)
        order = rng.permutation(n)
        return idx[order], labels[order]

    def balanced_set(self, per_class: int) -> tuple[torch.Tensor, np.ndarray] | None:
        """A fixed set of up to ``per_class`` crops of every class (validation)."""
        if per_class <= 0:
            return None
        rng = np.random.default_rng(0)
        idx, labels = [], []
        for c, pool in enumerate(self.pool):
            take = pool[rng.choice(len(pool), min(per_class, len(pool)), replace=False)]
            idx.append(take)
            labels.append(np.full(len(take), c))
        idx = np.concatenate(idx)
        return self.gather(idx, np.zeros(len(idx), bool)), np.concatenate(labels)

    def gather(self, idx: np.ndarray, flips: np.ndarray) -> torch.Tensor:
        """Normalised crops (B, 3, P, P) around pixels ``idx`` (image, y, x), some mirrored.

        A mirrored crop is the crop starting one column to the right, flipped: with an even
        patch size the centre pixel sits at index ``P // 2`` and mirroring moves it to
        ``P // 2 - 1``, so the shift keeps the labelled pixel at the centre. The last column
        has no right neighbour and is never mirrored.
        """
        flips = flips & (idx[:, 2] < self.width - 1) if self.p % 2 == 0 else flips
        x0 = idx[:, 2] + (flips & (self.p % 2 == 0))
        ar = np.arange(self.p)
        rows = torch.as_tensor(idx[:, 1, None] + ar, device=self.device)
        cols = torch.as_tensor(x0[:, None] + ar, device=self.device)
        img = torch.as_tensor(idx[:, 0], device=self.device)
        crops = self.images[img[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        crops = crops.permute(0, 3, 1, 2)  # advanced indexing put the channels last
        flip_t = torch.as_tensor(flips, device=self.device)
        crops = torch.where(flip_t[:, None, None, None], crops.flip(-1), crops)
        return normalise(crops)
