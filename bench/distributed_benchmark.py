"""Wall time of a config run serially against the same config on a local Dask cluster.

    python -m bench.distributed_benchmark configs/quick.yaml [--workers 2]

Runs the config twice from nothing, each in a fresh Python process with its own results store
and runs folder (so neither reuses the other's rows, checkpoints or caches), under
``runs/distributed_benchmark/``, which it empties first:

1. serially, as ``segbench run`` does (each method with the threads its parameters give it:
   the forests' ``n_jobs=-1`` and torch's default use every core);
2. with ``--scheduler local:N``: N single-threaded worker processes, each method's pools
   limited to ``cores // N`` threads (:func:`bench.distributed.connect`), so both runs use the
   machine's cores and neither oversubscribes it.

From the rows' ``started`` and ``finished`` stamps (whole seconds) it derives what the wall times
imply for N machines: the sum of the units' times (the work), the longest unit (no number of
workers finishes before it), the time outside the units (start-up, checks, cluster start: serial
by nature) and the overhead per task. It also says whether the two runs' scores agree (they
need not to the last digit where a network trains with another thread count). Results go to
``results/benchmarks/distributed.json`` and ``.md`` with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.datasets.root import REPO_ROOT
from bench.rows import run_label, write_text
from bench.system import environment

log = logging.getLogger(__name__)
OUT_DIR = REPO_ROOT / "results" / "benchmarks"
WORK_DIR = REPO_ROOT / "runs" / "distributed_benchmark"


def _one(config: str, scheduler: str | None, store: Path, runs: Path) -> None:
    """Child process: run ``config`` into ``store`` with ``runs`` as its runs folder."""
    from bench.config import load_config
    from bench.runner import run_config

    cfg = load_config(config)
    if scheduler is None:
        run_config(cfg, results_dir=store, runs_dir=runs)
        return
    from bench.distributed import connect, run_config_distributed

    client = connect(scheduler)
    try:
        run_config_distributed(cfg, client, results_dir=store, runs_dir=runs)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def unit_times(store: Path) -> dict[str, float]:
    """Seconds from the first ``started`` to the last ``finished`` of each unit of work.

    A unit is a method, fold and seed with its CRF row (``<id>+crf``), as a Dask task runs it.
    """
    units: dict[str, list[float]] = {}
    for path in sorted(store.rglob("*.json")):
        row = json.loads(path.read_text())
        if "fingerprint" not in row or "started" not in row or "finished" not in row:
            continue
        key = f"{row['method'].split('+')[0]} {run_label(row)}"
        units.setdefault(key, []).extend([_stamp(row["started"]), _stamp(row["finished"])])
    return {k: max(v) - min(v) for k, v in units.items()}


def scores(store: Path) -> dict[str, float]:
    """mIoU of every row of ``store``, by method, fold and seed."""
    out = {}
    for path in sorted(store.rglob("*.json")):
        row = json.loads(path.read_text())
        if "fingerprint" in row and row.get("status") == "ok":
            out[f"{row['method']} {run_label(row)}"] = row["miou"]
    return out


def measure(config: str, workers: int = 2, work: Path = WORK_DIR) -> dict:
    """Run ``config`` serially and on ``local:workers``; the wall times and what they imply."""
    if work.exists():
        shutil.rmtree(work)  # the benchmark's own scratch stores: both runs start from nothing
    result: dict = {"config": config, "workers": workers, "runs": {}}
    for name in ("serial", f"local:{workers}"):
        runs = work / name.replace(":", "_")
        store = runs / "results"
        log.info("%s: %s", name, config)
        cmd = [sys.executable, "-m", "bench.distributed_benchmark", config, "--one", name]
        cmd += ["--store", str(store), "--runs", str(runs)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO_ROOT)
        wall = time.perf_counter() - t0
        units = unit_times(store)
        result["runs"][name] = {
            "wall_s": wall,
            "units": len(units),
            "work_s": sum(units.values()),
            "longest_unit_s": max(units.values()),
            "longest_unit": max(units, key=units.get),
            "unit_s": units,
            "scores": scores(store),
        }
    serial, dask = result["runs"]["serial"], result["runs"][f"local:{workers}"]
    result["speedup"] = serial["wall_s"] / dask["wall_s"]
    # outside the units: imports, checks, data loading before the first unit, cluster start
    result["serial_outside_units_s"] = serial["wall_s"] - serial["work_s"]
    # a worker busy all the time would finish at work / N; the rest is the cost of the cluster
    # (per task: start-up and scheduling spread over the tasks) and of waiting for the longest
    ideal = max(dask["work_s"] / workers, dask["longest_unit_s"])
    result["dask_overhead_per_task_s"] = (dask["wall_s"] - ideal) / dask["units"]
    # stamps are whole seconds: a grid of sub-second units has no measurable work
    result["work_ratio"] = dask["work_s"] / serial["work_s"] if serial["work_s"] else float("nan")
    same = set(serial["scores"]) & set(dask["scores"])
    result["rows_compared"] = len(same)
    result["max_abs_miou_diff"] = max(
        (abs(serial["scores"][k] - dask["scores"][k]) for k in same), default=float("nan")
    )
    result["different_rows"] = sorted(k for k in same if serial["scores"][k] != dask["scores"][k])
    result["environment"] = environment(REPO_ROOT)
    return result


def to_markdown(r: dict) -> str:
    """The measurement as a Markdown page."""
    serial, dask = r["runs"]["serial"], r["runs"][f"local:{r['workers']}"]
    env = r["environment"]
    lines = [
        "# The grid serially and on a local Dask cluster",
        "",
        f"`python -m bench.distributed_benchmark {r['config']} --workers {r['workers']}` on "
        f"{env['cpu']} ({env['cpu_count']} cores), commit `{env['git_commit']}`. Each run starts "
        "from an empty store and runs folder in a fresh process; wall time includes imports, "
        "checks and (Dask) the cluster's start. Unit = one method, fold and seed with its CRF "
        "row: one Dask task.",
        "",
        "| run | wall s | units | sum of unit s | longest unit s | longest unit |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, run in r["runs"].items():
        lines.append(
            f"| {name} | {run['wall_s']:.0f} | {run['units']} | {run['work_s']:.0f} | "
            f"{run['longest_unit_s']:.0f} | {run['longest_unit']} |"
        )
    if serial["longest_unit_s"] > 0:  # row stamps are whole seconds: a toy grid has none
        share = serial["longest_unit_s"] / serial["work_s"]
        bound = [
            f"- For N machines like this one, each running whole units with its cores: the grid "
            f"takes about max(work / N, longest unit) + overhead; the longest unit is {share:.0%} "
            f"of the serial work, so no N makes this config more than {1 / share:.1f}x faster "
            "than one machine (split the longest method's work, or run more configs, folds and "
            "seeds at once).",
        ]
    else:
        bound = []
    lines += [
        "",
        f"- Speed-up of `local:{r['workers']}` over serial: **{r['speedup']:.2f}x**.",
        f"- Serial run outside the units (imports, checks, data before the first unit): "
        f"{r['serial_outside_units_s']:.0f} s of {serial['wall_s']:.0f}.",
        f"- Work on the cluster against serial (sum of unit times): {r['work_ratio']:.2f}x "
        "(each worker has half the cores: a unit whose method uses two threads serially "
        "takes longer in a worker).",
        f"- Longest unit on the cluster: {dask['longest_unit_s']:.0f} s "
        f"({dask['longest_unit']}): no number of workers ends the grid sooner.",
        *bound,
        f"- Cluster overhead per task, (wall - max(work / {r['workers']}, longest unit)) / tasks: "
        f"{r['dask_overhead_per_task_s']:.1f} s (scheduling, worker start, idle workers at "
        "the end).",
        f"- Scores: {r['rows_compared']} rows in both runs, largest mIoU difference "
        f"{r['max_abs_miou_diff'] * 100:.2f} points"
        + (
            f"; rows that differ: {', '.join(r['different_rows'])}"
            if r["different_rows"]
            else "; identical"
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m bench.distributed_benchmark CONFIG [--workers N]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)
    if args.one:
        _one(args.config, None if args.one == "serial" else args.one, args.store, args.runs)
        return
    result = measure(args.config, args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "distributed.json", json.dumps(result, indent=1))
    write_text(args.out / "distributed.md", to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
