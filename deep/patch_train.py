"""Training of the sliding-window patch classifier (:class:`~deep.patch_net.PatchNet`).

Both :class:`~baselines.sliding_window.SlidingWindowCNN` and its fully convolutional twin
:class:`~deep.patch_fcn.PatchFCN` get their weights here, so that the same parameters, seed and
data give one trained network that both rows share (one checkpoint, :mod:`deep.checkpoints`).

The loop is not :func:`deep.train.train`: that one trains dense networks on image crops with a
per-pixel loss, this one a classifier on pixel-centred patches drawn class by class
(:class:`CropSampler`). What they share (where checkpoints live, how they are keyed, written
and read) is :mod:`deep.checkpoints`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from deep.checkpoints import checkpoint_folder, load_checkpoint, save_checkpoint
from deep.ddp import average_buffers, barrier, is_first, process_group, sum_over_processes, wrap
from deep.patch_net import PatchNet, normalise, pad_for_patches
from deep.train import resolve_device

log = logging.getLogger(__name__)

#: Parameters that decide the trained weights: the checkpoint cache key. Inference-only
#: parameters (stride, batch size, device, folders) are left out, so every method built with the
#: same training parameters (sliding window at any stride, its fully convolutional twin) shares
#: one trained network.
TRAIN_PARAMS = (
    "patch_size", "channels", "hidden", "dropout", "epochs", "crops_per_epoch",
    "train_batch_size", "lr", "weight_decay", "class_balance", "candidates_per_class",
    "flip", "val_crops_per_class", "random_state",
)  # fmt: skip


def train_patch_net(
    params: dict,
    dataset,  # noqa: ANN001
    val_dataset,  # noqa: ANN001 - None: no validation, the last epoch is kept
    checkpoint_dir: str | Path,
    device: torch.device | None = None,
) -> tuple[PatchNet, list[dict], bool]:
    """Train a :class:`PatchNet` with ``params`` (:data:`TRAIN_PARAMS`), or load its checkpoint.

    The checkpoint lives in ``checkpoint_dir``/``patch_net-<key>`` (:mod:`deep.checkpoints`):
    the key covers ``params``, the training and validation data and this code.

    Returns
    -------
    net : PatchNet
        In eval mode, on ``device``, with the weights of the best validation epoch.
    history : list of dict
        Per epoch: training loss and validation score.
    trained : bool
        False when a finished checkpoint was loaded and no epoch ran.
    """
    device = device or resolve_device("auto")
    path = checkpoint_path(params, dataset, val_dataset, checkpoint_dir)
    torch.manual_seed(params["random_state"])
    net = PatchNet(
        dataset.n_classes, params["patch_size"], params["channels"], params["hidden"],
        params["dropout"],
    ).to(device)  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    state = {"epoch": 0, "history": [], "best_score": -1.0, "best_model": None}
    if path.is_file():
        ckpt = load_checkpoint(path, device)
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
        # in a process group (deep.ddp): DDP, each process a share of every batch; the fixed
        # validation crops are scored whole by every process (the same network everywhere)
        ddp_net = wrap(net, device)
        for epoch in range(state["epoch"], params["epochs"]):
            t0 = time.perf_counter()
            loss = _train_epoch(ddp_net, opt, crops, params, epoch)
            average_buffers(net)
            score = _val_score(net, val_set, dataset.n_classes) if val_set else float("nan")
            log.info("epoch %d: loss %.4f, val class accuracy %.4f", epoch + 1, loss, score)
            state["history"].append({"epoch": epoch + 1, "loss": loss, "val_mean_acc": score,
                                     "seconds": time.perf_counter() - t0})  # fmt: skip
            if val_set is None or score > state["best_score"]:
                state["best_score"] = score if val_set else -1.0
                state["best_model"] = copy.deepcopy(net.state_dict())
            state["epoch"] = epoch + 1
            if is_first():
                save_checkpoint(path, {**state, **_training_state(net, opt)})
            barrier()
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
    val_dataset,  # noqa: ANN001
    checkpoint_dir: str | Path,
) -> Path:
    """``<checkpoint_dir>/patch_net-<hash of training parameters, data and code>/last.pt``."""
    key = {
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "train": _data_key(dataset),
        "val": _data_key(val_dataset) if val_dataset is not None else None,
    }
    world = process_group()[1]
    if world > 1:  # weights of N processes are not one process's (deep.ddp)
        key["world_size"] = world
    return checkpoint_folder(checkpoint_dir, "patch_net", key, __name__) / "last.pt"


def _training_state(net: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Weights, optimiser and generator states: what an exact resume needs besides history."""
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _data_key(dataset) -> dict:  # noqa: ANN001
    """What identifies a training set: its description, its names and two of its images."""
    first, last = dataset.image(0), dataset.image(len(dataset) - 1)
    content = hashlib.sha256(first.tobytes() + last.tobytes()).hexdigest()[:16]
    names = hashlib.sha256("\n".join(dataset.names).encode()).hexdigest()[:16]
    return {"repr": repr(dataset), "names": names, "content": content}


def _train_epoch(
    net: nn.Module, opt: torch.optim.Optimizer, crops: CropSampler, params: dict, epoch: int
) -> float:
    """One epoch over freshly drawn crops; the mean training loss (over the process group)."""
    rank, world = process_group()
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
        # a process takes every world-th crop of the batch (DistributedSampler's split of it)
        sl = slice(start + rank, start + bs, world)
        x = crops.gather(x_idx[sl], flips[sl])
        y = torch.as_tensor(labels[sl], device=x.device, dtype=torch.long)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(y)
        n += len(y)
        bar.set_postfix(loss=f"{total / n:.3f}")
    if world > 1:
        both = sum_over_processes(torch.tensor([total, float(n)], dtype=torch.float64))
        total, n = float(both[0]), int(both[1])
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
        # Images of several sizes (Stanford Background has 51) share one canvas, zero-filled
        # below and right of each reflect-padded image: a crop around a pixel of the image only
        # reaches its reflected border, never the fill. One tensor keeps gathering one indexing.
        height = max(im.shape[1] for im in images)
        width = max(im.shape[2] for im in images)
        self.images = torch.stack(
            [F.pad(im, (0, width - im.shape[2], 0, height - im.shape[1])) for im in images]
        ).to(device)  # (N, 3, H+P-1, W+P-1) uint8
        # each image's own width: its last column has no right neighbour to mirror from
        self.widths = np.array([im.shape[2] - self.p + 1 for im in images])
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
        flips = flips & (idx[:, 2] < self.widths[idx[:, 0]] - 1) if self.p % 2 == 0 else flips
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
