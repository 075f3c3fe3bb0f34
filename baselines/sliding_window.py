"""Sliding-window CNN: a patch classifier applied to the square crop around every pixel.

The classifier (:class:`PatchNet`) labels the centre pixel of a ``patch_size`` crop with a few
valid (unpadded) conv + BN + ReLU + max-pool blocks followed by fully connected layers. It is
trained on crops sampled from the training split with class balancing. At test time it labels
an image by classifying the crop around every pixel (``stride=1``), in batches, the image
reflect-padded at its borders; ``stride=s`` classifies every s-th pixel and interpolates the
scores bilinearly. This is the expensive baseline that :mod:`deep.patch_fcn` makes fully
convolutional.

The crop geometry is :mod:`deep.patch_net`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import RegularGridInterpolator
from tqdm import tqdm

from bench.method import SegmentationMethod
from deep.checkpoints import checkpoint_root
from deep.patch_net import normalise, pad_for_patches
from deep.patch_train import TRAIN_PARAMS, checkpoint_summary, train_patch_net
from deep.train import resolve_device


def sample_positions(n: int, stride: int) -> np.ndarray:
    """Every ``stride``-th index of ``0..n-1``, and ``n-1`` so that nothing is extrapolated."""
    pos = np.arange(0, n, stride)
    if pos[-1] != n - 1:
        pos = np.append(pos, n - 1)
    return pos


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
        Checkpoint cache (the runner passes ``runs/checkpoints``); None trains in a temporary
        folder. Each set of training parameters, data and code has its own sub-folder (a hash),
        saved after every epoch: a killed fit resumes from the last epoch, and a finished one
        is loaded, not redone.
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
        params = {p: getattr(self, p) for p in TRAIN_PARAMS}
        device = resolve_device(self.device or "auto")
        with checkpoint_root(self.checkpoint_dir) as root:
            self.net_, self.history_, self.trained_ = train_patch_net(
                params, dataset, val_dataset, root, device
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
