"""A config's grid on a Dask cluster: one task per unit of work (method, fold, seed).

    segbench run configs/stanford.yaml --scheduler tcp://scheduler:8786
    segbench run configs/quick.yaml --scheduler local:2      # a LocalCluster of 2 workers

Each task runs exactly what :func:`bench.runner.run_config` runs for one unit
(:func:`bench.runner._run_or_reuse`: resume by fingerprint, fit, predict, score, write the
row atomically), so a cluster writes the rows one machine would write. What stays in the
calling process: the checks before any work (method names and parameters, the store, the
group's identity, the split lists), the group's lock, the group's ``config.yaml``, and the
order of the returned rows (the serial order, whatever order the tasks finish in).

Requirements of the cluster: every worker imports this checkout's code (same commit and lock
file, or its rows say otherwise in their provenance), and reaches the results store, the runs
folder and the data root at the same paths as this process (a shared file system).
:func:`check_shared_store` verifies the store before the first task: a worker that cannot write
there, or whose files this process cannot see, stops the run with one message.

A worker that dies mid-task loses that task's work only: the scheduler gives the task to
another worker (``distributed``'s ``allowed_failures``, 3 by default), rows are written whole
or not at all (the runner's atomic writer), and a network resumes from its last epoch's
checkpoint. A method that fails becomes a failed row, as in one process; bad input (a
:class:`~bench.errors.SegbenchError` in a task) cancels the tasks not yet started and stops the
run with its message.

Reaching SLURM or PBS: start a cluster with ``dask-jobqueue`` (``SLURMCluster(cores=2,
memory="8GB", processes=1)``, ``cluster.scale(jobs=10)``) in a Python session and pass its
``scheduler_address`` to ``--scheduler``. That path is not tested here (no batch system on the
development machine).

Why Dask rather than a loop over ``multiprocessing``: the same code then runs on one machine
(LocalCluster) and on a cluster, with task retry on lost workers and a dashboard, from a
maintained library.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from bench import runner
from bench.config import Config
from bench.datasets import load_splits
from bench.errors import SegbenchError
from bench.methods import build_method
from bench.rows import run_label, write_text

log = logging.getLogger(__name__)


def connect(address: str):  # noqa: ANN201 - a distributed.Client
    """A ``distributed.Client`` for ``address``; ``local:N`` starts a LocalCluster of N workers.

    Local workers are processes with one task thread each. The cores are shared out among
    them: each worker's OpenMP, BLAS, torch and joblib pools get ``cores // N`` threads (at
    least 1), so a method whose ``n_jobs`` is -1 or whose torch threads are left at their
    default does not oversubscribe the machine N times over. A method given an explicit
    ``n_threads`` or positive ``n_jobs`` keeps it.
    """
    from distributed import Client, LocalCluster

    # distributed logs every worker's start and stop at INFO; the runner's lines say what runs
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if address.startswith("local:"):
        try:
            n = int(address.partition(":")[2])
        except ValueError:
            n = 0
        if n < 1:
            raise SegbenchError(f"--scheduler {address!r}: write local:N with N >= 1 workers")
        per_worker = str(max(1, len(os.sched_getaffinity(0)) // n))
        # read by torch and the BLAS libraries when a worker imports them, and by joblib's
        # cpu_count (n_jobs=-1); distributed's own default would pin every pool to 1 thread
        threads = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        env = {name: per_worker for name in (*threads, "LOKY_MAX_CPU_COUNT")}
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, env=env
        )
        return Client(cluster)
    try:
        return Client(address, timeout="20s")
    except OSError as exc:
        raise SegbenchError(f"--scheduler {address!r}: cannot reach it ({exc})") from exc


def _probe(folder: str, token: str) -> str:
    """Runs on a worker: write a file named after the worker into the store."""
    name = f".probe-{token}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    Path(folder, name).write_text("")
    return name


def check_shared_store(client, folder: Path) -> None:  # noqa: ANN001
    """Fail unless every worker can write into ``folder`` and this process sees what it wrote."""
    token = uuid.uuid4().hex[:12]
    try:
        names = client.run(_probe, str(folder), token)
    except OSError as exc:
        raise SegbenchError(
            f"{folder}: a worker cannot write the results store there ({exc}); the store must "
            "be a folder every worker reaches at the same path"
        ) from exc
    try:
        for worker, name in names.items():
            if not (folder / name).is_file():
                raise SegbenchError(
                    f"{folder}: worker {worker} wrote into a folder of this path that this "
                    "process does not see; the store must be on a file system shared by all"
                )
    finally:
        for name in names.values():
            (folder / name).unlink(missing_ok=True)


def _unit(
    cfg: Config,
    spec,  # noqa: ANN001 - a bench.config.MethodSpec
    seed: int,
    fold: int | None,
    out_dir: Path,
    runs_dir: Path,
    force: bool,
) -> list[dict]:
    """Runs on a worker: one method, fold and seed, as the in-process runner runs it."""
    splits = load_splits(cfg, fold)
    data_id = runner.data_identity(*splits)
    return runner._run_or_reuse(cfg, spec, seed, data_id, splits, out_dir, runs_dir, force, fold)


def run_config_distributed(
    cfg: Config,
    client,  # noqa: ANN001 - a distributed.Client
    force: bool = False,
    only: list[str] | None = None,
    results_dir: Path = runner.LOCAL_DIR,
    runs_dir: Path = runner.RUNS_DIR,
) -> list[dict]:
    """:func:`bench.runner.run_config` with one Dask task per (fold, method, seed).

    Returns the rows in the order the serial runner would return them.
    """
    from distributed import as_completed

    results_dir, runs_dir = Path(results_dir), Path(runs_dir)
    out_dir = runner.rows_dir(cfg, results_dir)
    specs = cfg.methods
    if only:
        missing = sorted(set(only) - {m.id for m in specs})
        if missing:
            raise SegbenchError(f"{cfg.source}: no method with id {', '.join(missing)}")
        specs = [m for m in specs if m.id in only]
    # the in-process runner's checks, in its order, before any task is sent
    for spec in specs:
        build_method(spec.name, spec.params)
        if spec.crf is not None:
            build_method("dense_crf", spec.crf)
    runner._check_writable(out_dir)
    runner._check_group(out_dir, cfg)
    folds = cfg.folds or [None]
    for fold in folds:
        load_splits(cfg, fold)
    check_shared_store(client, out_dir)
    units = [(fold, spec, seed) for fold in folds for spec in specs for seed in cfg.seeds]
    with runner.group_lock(out_dir):
        write_text(out_dir / "config.yaml", cfg.to_yaml())
        log.info("config %s: %d units of work on %s", cfg.name, len(units), client)
        futures = {
            client.submit(
                _unit, cfg, spec, seed, fold, out_dir, runs_dir, force,
                key=f"{cfg.name}-{spec.id}-fold{fold}-seed{seed}-{uuid.uuid4().hex[:6]}",
                pure=False,
            ): i
            for i, (fold, spec, seed) in enumerate(units)
        }  # fmt: skip
        done: dict[int, list[dict]] = {}
        try:
            for future in as_completed(futures):
                rows = future.result()  # a SegbenchError of the task is raised here
                done[futures[future]] = rows
                for row in rows:
                    log.info("%s %s: %s", row["method"], run_label(row), row["status"])
        except BaseException:
            client.cancel(list(futures))
            raise
    return [row for i in range(len(units)) for row in done[i]]
