"""Run by tests/test_ddp.py under ``torchrun --nproc_per_node=2``: train tiny networks with DDP.

Each process writes what it ends with to OUT/rank<k>.pt: the FCN's weights and its all-reduced
validation scores, the patch network's weights and its history.
"""

import sys
from pathlib import Path

import torch

from bench.datasets import Synthetic
from deep.ddp import init_from_environment
from deep.fcn import FCN
from deep.patch_fcn import PatchFCN
from deep.train import evaluate, load_arrays

out = Path(sys.argv[1])
rank, world = init_from_environment()
torch.set_num_threads(1)
train = Synthetic("train", n_images=8, size=(32, 40))
val = Synthetic("val", n_images=5, size=(32, 40))
fcn = FCN(arch="fcn8s", width=4, epochs=2, batch_size=4, crop=[32, 32], device="cpu",
          n_threads=1, checkpoint_dir=str(out / "ckpt"), precision="fp32")  # fmt: skip
fcn.fit(train, val)
scores = evaluate(fcn.network_, load_arrays(val), torch.device("cpu"), 2, "fp32")
patch = PatchFCN(patch_size=32, channels=(4, 4, 4), hidden=8, epochs=2, crops_per_epoch=128,
                 train_batch_size=64, candidates_per_class=20, val_crops_per_class=5,
                 checkpoint_dir=str(out / "ckpt"), device="cpu").fit(train, val)  # fmt: skip
torch.save({
    "fcn": fcn.network_.state_dict(), "scores": scores, "fcn_dir": str(fcn.checkpoint_dir_),
    "patch": patch.patch_net_.state_dict(), "patch_history": patch.history_,
}, out / f"rank{rank}.pt")  # fmt: skip
torch.distributed.destroy_process_group()
