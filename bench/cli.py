"""``segbench`` command line: a thin layer over the runner, evaluator, report and data tools."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from bench.errors import SegbenchError
from bench.rows import run_label

log = logging.getLogger("segbench")


def _store(args: argparse.Namespace) -> Path:
    """The store a command works on: ``--store``, else the reference or the user's own."""
    from bench.runner import LOCAL_DIR, REFERENCE_DIR

    if getattr(args, "store", None):
        return Path(args.store)
    return REFERENCE_DIR if getattr(args, "reference", False) else LOCAL_DIR


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.config import load_config
    from bench.datasets import load_splits
    from bench.runner import run_config

    cfg = load_config(args.config)
    if args.data_root:
        cfg.data_root = args.data_root
    # The dataset and its split lists first: an unknown dataset or split name gets its own
    # message, not the runner's "rows made by a config with other settings" of a store whose
    # group shares the config's name. (Done here, not in the runner, whose source is part of
    # every row's code hash.)
    for fold in cfg.folds or [None]:
        try:
            load_splits(cfg, fold)
        except SegbenchError as exc:
            where = "" if str(exc).startswith(cfg.source) else f"{cfg.source}: "
            raise SegbenchError(f"{where}{exc}") from exc
    scheduler = args.scheduler or os.environ.get("SEGBENCH_SCHEDULER")
    if scheduler:
        from bench.distributed import connect, run_config_distributed

        client = connect(scheduler)
        try:
            rows = run_config_distributed(
                cfg, client, force=args.force, only=args.only, results_dir=_store(args)
            )
        finally:
            cluster = client.cluster if scheduler.startswith("local:") else None
            client.close()
            if cluster is not None:
                cluster.close()
    else:
        rows = run_config(cfg, force=args.force, only=args.only, results_dir=_store(args))
    failed = [f"{r['method']} ({run_label(r)})" for r in rows if r["status"] != "ok"]
    log.info("%d rows done, %d failed %s", len(rows), len(failed), failed or "")
    if not args.no_report:
        _cmd_report(args)
    if failed:
        # Exit status 1 (not 2, bad input): the run went through, every other row is stored,
        # and the failed rows record their error; but a benchmark with a failed row is not
        # complete, so scripts and `make bench` must not carry on as if it were.
        print(
            f"error: {len(failed)} row(s) failed: {', '.join(failed)}; each row's 'error' field "
            "says why (the other rows are stored)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> None:
    from bench.report import write_report
    from bench.runner import REFERENCE_DIR

    store = _store(args)
    # A user's store is reported beside the reference: score differences and time ratios.
    reference = None if store.resolve() == REFERENCE_DIR.resolve() else REFERENCE_DIR
    write_report(store, reference_dir=reference)
    log.info("report: %s", store / "README.md")


def _cmd_promote(args: argparse.Namespace) -> None:
    from bench.report import write_report
    from bench.runner import LOCAL_DIR, REFERENCE_DIR
    from bench.store import promote

    source = Path(args.store) if args.store else LOCAL_DIR
    written = promote(source, REFERENCE_DIR, args.configs or None)
    print(f"{len(written)} row group(s) copied into {REFERENCE_DIR}/rows")
    write_report(REFERENCE_DIR)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from bench.datasets import load_dataset
    from bench.metrics import format_scores
    from bench.runner import evaluate_dir

    dataset = load_dataset(args.dataset, args.split, root=args.data_root)
    scores, (low, high) = evaluate_dir(
        Path(args.pred_dir), dataset, progress=lambda it: tqdm(it, desc="evaluate", unit="img")
    )
    print(format_scores(scores, dataset.class_names, ci=(low, high)))
    if args.json:
        out = {
            "miou": scores["miou"],
            "miou_ci95": [low, high],
            "global_acc": scores["global_acc"],
            "mean_acc": scores["mean_acc"],
            "fwiou": scores["fwiou"],
            "bf_score": scores["bf_score"],
            "per_class_iou": scores["per_class_iou"],
            "per_class_acc": scores["per_class_acc"],
            "class_names": list(dataset.class_names),
            "dataset": args.dataset,
            "split": args.split,
            "n_images": len(dataset),
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
        log.info("wrote %s", args.json)


def _cmd_data(args: argparse.Namespace) -> None:
    from bench.datasets import dataset_class
    from bench.datasets import download as dl
    from bench.datasets.root import data_root

    cls = dataset_class(args.dataset)
    if cls.folder is None:
        raise SegbenchError(
            f"{args.dataset} is generated, not read from files: nothing to {args.action}"
        )
    folder = data_root(args.data_root) / cls.folder
    archive = dl.archive_module(args.dataset)
    if archive is not None and args.action != "check":
        # One archive to fetch and convert (bench.datasets.stanford_download): every file made
        # from it is checked against the manifest shipped with segbench.
        manifest = dl.read_manifest(archive.MANIFEST)
        if args.action == "download" or any(not (folder / r).is_file() for r in manifest):
            archive.download(folder, args.url or archive.URL, manifest)
        dl.ensure(folder, manifest, None)
        print(f"{folder}: {cls.__name__} present and verified")
        return
    # A download is verified against a manifest shipped with segbench: one fetched with the data
    # would vouch for itself. Without one there is nothing to download against.
    url = (args.url or cls.download_url) if cls.manifest is not None else None
    if url is None and args.action == "download":
        raise SegbenchError(
            f"segbench cannot download {args.dataset} yet; copy it to {folder} or point "
            "SEGBENCH_DATA / --data-root at a data root that holds it"
        )
    manifest = dl.folder_manifest(folder, cls.manifest)
    if args.action == "check":
        problems = dl.verify(folder, manifest)
        if problems:
            raise SegbenchError(
                f"{folder}: {len(problems)} of {len(manifest)} files fail verification:"
                "\n  " + "\n  ".join(problems[:20])
            )
        print(f"{folder}: all {len(manifest)} files match their SHA-256")
    elif args.action == "download":
        dl.download(url, folder, manifest)
        print(f"{folder}: all {len(manifest)} files downloaded and verified")
    else:  # ensure
        dl.ensure(folder, manifest, url)
        print(f"{folder}: {cls.__name__} present and verified")


def _cmd_benchmark(args: argparse.Namespace) -> None:
    from bench import benchmarks

    benchmarks.run(args.what, data_root=args.data_root)


def _store_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--reference",
        action="store_true",
        help="use the committed reference store results/ (default: your own, runs/results)",
    )
    where.add_argument("--store", help="use this store folder instead")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segbench", description="Semantic segmentation benchmark: classical vs deep."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a benchmark configuration (YAML)")
    run.add_argument("config", help="e.g. configs/quick.yaml")
    run.add_argument("--force", action="store_true", help="redo methods already done")
    run.add_argument("--only", nargs="+", metavar="ID", help="run only these method ids")
    run.add_argument("--data-root", help="folder holding one folder per dataset")
    run.add_argument("--no-report", action="store_true", help="do not regenerate the report")
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run each (method, fold, seed) as a task on this Dask scheduler (tcp://host:8786), "
        "or on a local cluster of N workers (local:N); also SEGBENCH_SCHEDULER",
    )
    _store_options(run)
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="regenerate a store's tables and figures from rows")
    _store_options(report)
    report.set_defaults(func=_cmd_report)

    promote = sub.add_parser(
        "promote", help="copy your rows (runs/results) over the committed reference (results/)"
    )
    promote.add_argument("configs", nargs="*", help="config names (default: all)")
    promote.add_argument("--store", help="the store to copy from (default: runs/results)")
    promote.set_defaults(func=_cmd_promote)

    ev = sub.add_parser("evaluate", help="score a folder of label PNGs with the evaluator")
    ev.add_argument("--pred-dir", required=True, help="one NAME.png label map per image")
    ev.add_argument("--split", default="test")
    ev.add_argument("--dataset", default="camvid")
    ev.add_argument("--data-root", help="folder holding one folder per dataset")
    ev.add_argument("--json", help="also write the scores to this JSON file")
    ev.set_defaults(func=_cmd_evaluate)

    data = sub.add_parser("data", help="check, download or ensure a dataset")
    data.add_argument("action", choices=["check", "download", "ensure"])
    data.add_argument("dataset", nargs="?", default="camvid")
    data.add_argument("--data-root", help="folder holding one folder per dataset")
    data.add_argument(
        "--url",
        default=None,
        help="base URL of the dataset folder, or of its archive (default: the dataset's own)",
    )
    data.set_defaults(func=_cmd_data)

    bm = sub.add_parser("benchmark", help="micro-benchmarks of the harness itself")
    bm.add_argument("what", choices=["evaluator", "decode", "all"])
    bm.add_argument("--data-root", help="folder holding one folder per dataset")
    bm.set_defaults(func=_cmd_benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        status = args.func(args) or 0
    except SegbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rows already written are kept; rerun to resume", file=sys.stderr)
        return 130
    return status
