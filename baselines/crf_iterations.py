"""Refinement by iterations: a method's scores after 0, 1, ..., N mean-field steps of the CRF.

The lecture notes say CRFs "refine results by iterations". This study measures it for one
method of a config: mIoU, class-average accuracy and boundary F1 of the dense CRF
(:mod:`baselines.dense_crf`) after each number of mean-field iterations, 0 being the method
alone. The count is chosen away from test:

1. *Selection*: the method is fitted on CamVid's ``select_train`` (train without sequence
   0006R0), the CRF's bilateral kernel is tuned on a few ``select`` images (0006R0) as the CRF
   stage tunes it on val, and every iteration count is scored on all of ``select``; the count
   with the best mIoU there is the choice.
2. *Test*: the method is refitted on all of ``train`` and every count is scored on ``test``
   with the kernel chosen in 1, so the test curve shows what the choice costs or gains; it is
   not used to choose anything.

Scores are at native resolution with the one evaluator, as the runner scores rows. Run
``python -m baselines.crf_iterations`` (defaults: ``superpixel_quickshift`` of
``configs/quick.yaml``, 0..10 iterations); it writes ``results/benchmarks/crf_iterations.json``,
``.md`` and a figure (``crf_iterations_<method id>.*`` for another method; with ``--runs-dir
runs`` a network reuses the runner's finished training of the same settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from baselines.dense_crf import DenseCRF, crf_refine
from bench.datasets.root import REPO_ROOT
from bench.metrics import ConfusionMatrix, boundary_f1
from bench.system import environment

log = logging.getLogger(__name__)
OUT_DIR = REPO_ROOT / "results" / "benchmarks"
#: The study of record: the best classical pipeline of the quick profile.
DEFAULT_CONFIG = "configs/quick.yaml"
DEFAULT_METHOD = "superpixel_quickshift"


def iteration_curve(
    method: Any,
    dataset: Any,
    crf_params: dict[str, float],
    max_iter: int = 10,
) -> list[dict[str, float]]:
    """Scores of ``method`` on ``dataset`` refined by 0..``max_iter`` mean-field iterations.

    Parameters
    ----------
    method : fitted segmentation method
        Its ``predict_proba`` runs once per image; the CRF runs once per image and count.
    dataset : SegmentationDataset
        Images at the working resolution; scored against native labels (probabilities
        upsampled bilinearly, as the runner does).
    crf_params : dict
        Kernel parameters of :func:`~baselines.dense_crf.crf_refine` (``n_iter`` is ignored).
    max_iter : int

    Returns
    -------
    list of dict
        One per count: ``n_iter``, ``miou``, ``mean_acc``, ``global_acc``, ``bf_score`` (mean
        over images), ``crf_ms`` (median CRF milliseconds per image; 0 for the method alone).
    """
    from bench.runner import scored_pair, upsample_proba  # the runner's scoring path

    kernels = {k: v for k, v in crf_params.items() if k != "n_iter"}
    counts = list(range(max_iter + 1))
    cms = [ConfusionMatrix(dataset.n_classes, dataset.ignore_index, keep_per_image=False)
           for _ in counts]  # fmt: skip
    bfs: list[list[float]] = [[] for _ in counts]
    times: list[list[float]] = [[] for _ in counts]
    for i in tqdm(range(len(dataset)), desc="CRF iterations", unit="img", leave=False):
        image, gt = scored_pair(dataset, i)
        proba = method.predict_proba(image)
        for k in counts:
            t0 = time.perf_counter()
            refined = proba if k == 0 else crf_refine(image, proba, n_iter=k, **kernels)
            times[k].append((time.perf_counter() - t0) * 1000.0)
            pred = np.argmax(upsample_proba(refined, gt.shape), axis=-1).astype(np.uint8)
            cms[k].update(pred, gt)
            bfs[k].append(boundary_f1(pred, gt, dataset.n_classes, dataset.ignore_index))
    out = []
    for k in counts:
        s = cms[k].scores()
        out.append({
            "n_iter": k, "miou": float(s["miou"]), "mean_acc": float(s["mean_acc"]),
            "global_acc": float(s["global_acc"]), "bf_score": float(np.nanmean(bfs[k])),
            "crf_ms": float(np.median(times[k])) if k else 0.0,
        })  # fmt: skip
    return out


def choose(curve: list[dict[str, float]]) -> int:
    """The iteration count with the best mIoU (ties: the fewest iterations, the cheapest)."""
    best = max(curve, key=lambda r: (r["miou"], -r["n_iter"]))
    return int(best["n_iter"])


def run_study(
    config_path: str | Path,
    method_id: str,
    max_iter: int = 10,
    tune_images: int = 8,
    data_root: str | None = None,
    runs_dir: Path | None = None,
) -> dict[str, Any]:
    """Selection curve, choice and test curve for method ``method_id`` of a config."""
    from dataclasses import replace

    from bench.config import load_config
    from bench.datasets import load_splits
    from bench.methods import build_method

    cfg = load_config(config_path)
    if data_root is not None:
        cfg.data_root = data_root
    spec = next((m for m in cfg.methods if m.id == method_id), None)
    if spec is None:
        known = ", ".join(m.id for m in cfg.methods)
        raise SystemExit(f"{config_path}: no method with id {method_id!r} (known: {known})")
    from bench.runner import seeded_params

    # with runs_dir, a network finds the runner's finished checkpoints of the same training
    # (same parameters, data and code) instead of training again
    params = seeded_params(spec.name, spec.params, cfg.seed, runs_dir)

    # 1. selection: fit without 0006R0 (no val: nothing of 0006R0 reaches the fit), tune the
    # kernel and choose the count on 0006R0
    train, _, select = load_splits(
        replace(cfg, train_split="select_train", val_split=None, split="select")
    )
    log.info("fitting %s on %s (%d images)", method_id, train.split, len(train))
    method = build_method(spec.name, params).fit(train)
    crf = DenseCRF(method, prefit=True, tune_images=tune_images, random_state=cfg.seed)
    crf.fit(None, val_dataset=select)
    kernels = dict(crf.best_params_)
    select_curve = iteration_curve(method, select, kernels, max_iter)
    chosen = choose(select_curve)
    log.info("chosen on select: %d iterations (mIoU %.4f)", chosen, select_curve[chosen]["miou"])
    # 2. test: refit as the runner fits (train, with the config's val), the kernel and the
    # count as chosen; the test curve is reported, never used to choose
    train, val, test = load_splits(cfg)
    log.info("fitting %s on %s (%d images)", method_id, train.split, len(train))
    method = build_method(spec.name, params).fit(train, val_dataset=val)
    test_curve = iteration_curve(method, test, kernels, max_iter)
    return {
        "config": str(config_path), "method": method_id, "method_name": spec.name,
        "params": spec.params, "resolution": cfg.resolution, "seed": cfg.seed,
        "crf_kernels": {k: v for k, v in kernels.items() if k != "n_iter"},
        "kernel_tuned_on": f"select, {tune_images} images, with 5 iterations",
        "chosen_n_iter": chosen, "select": select_curve, "test": test_curve,
    }  # fmt: skip


def _markdown(result: dict[str, Any]) -> str:
    k = result["chosen_n_iter"]
    lines = [
        "# Refinement by iterations: the dense CRF after 0..N mean-field steps",
        "",
        f"Method `{result['method']}` of `{result['config']}` (working resolution "
        f"{result['resolution']}, scored at native resolution), seed {result['seed']}. CRF "
        f"kernels tuned on `select` ({result['kernel_tuned_on']}): "
        + ", ".join(f"{n} {v:g}" for n, v in result["crf_kernels"].items())
        + f". **Chosen on `select`: {k} iterations**; 0 is the method alone.",
        "",
        "| iterations | select mIoU % | select class acc % | select BF % | test mIoU % | "
        "test class acc % | test BF % | CRF ms/image (test) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, t in zip(result["select"], result["test"], strict=True):
        mark = " (chosen)" if s["n_iter"] == k else ""
        lines.append(
            f"| {s['n_iter']}{mark} | {100 * s['miou']:.2f} | {100 * s['mean_acc']:.1f} | "
            f"{100 * s['bf_score']:.1f} | {100 * t['miou']:.2f} | {100 * t['mean_acc']:.1f} | "
            f"{100 * t['bf_score']:.1f} | {t['crf_ms']:.0f} |"
        )
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, title in zip(
        axes, ("miou", "mean_acc", "bf_score"), ("mIoU %", "class acc %", "BF %"), strict=True
    ):
        for split, style in (("select", "o-"), ("test", "s--")):
            xs = [r["n_iter"] for r in result[split]]
            ax.plot(xs, [100 * r[key] for r in result[split]], style, label=split, ms=4)
        ax.axvline(result["chosen_n_iter"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("mean-field iterations")
        ax.set_title(title)
    axes[0].legend()
    fig.suptitle(f"{result['method']} + dense CRF (chosen on select: {result['chosen_n_iter']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--method", default=DEFAULT_METHOD, help="a method id")
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--tune-images", type=int, default=8)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument(
        "--runs-dir", type=Path, default=None,
        help="networks reuse the runner's checkpoints under RUNS_DIR/checkpoints (e.g. runs)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )  # fmt: skip
    result = run_study(
        args.config, args.method, args.max_iter, args.tune_images, args.data_root, args.runs_dir
    )
    argv = sys.argv[1:] if argv is None else argv
    result["command"] = " ".join([".venv/bin/python -m baselines.crf_iterations", *argv])
    result["environment"] = environment(REPO_ROOT)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # the default study keeps its name; another method's gets its own files beside it
    default = args.method == DEFAULT_METHOD and Path(args.config) == Path(DEFAULT_CONFIG)
    stem = "crf_iterations" if default else f"crf_iterations_{args.method}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out_dir / f"{stem}.md").write_text(_markdown(result))
    _figure(result, args.out_dir / f"{stem}.png")
    log.info("wrote %s", args.out_dir / f"{stem}.md")
    return result


if __name__ == "__main__":
    main()
