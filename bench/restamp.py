"""Move stored rows to provenance rule 2 where the code that decides their numbers is unchanged.

    python -m bench.restamp [--store results] [--dry-run]

Rule 1 (the first sessions of round 2) hashed into every row the source of the method and of
the whole runner closure (the config parser and the hashing code included) and the whole lock
file; rule 2 (:mod:`bench.provenance`) hashes only what decides a row's numbers. Under rule 2
a row stored under rule 1 would count as other code's and be recomputed although nothing that
decides its numbers changed: for the reference that is hours of this CPU.

A row is moved only when git proves it, at the commit the row names (``git_commit``, not
dirty), for every row of its unit of work (a method, seed and fold, with its CRF row):

1. the row's rule-1 code hash and lock hash are what rule 1 gives for that commit's files, so
   the row is what its provenance says;
2. every file rule 2 hashes for it (method, the method a CRF row refines, harness) is
   byte-identical at that commit and in this checkout, rule 2 picks the same files there, and
   the lock-file pins rule 2 reads are the same lines;
3. the stored fingerprint is the one the runner builds from the row's group config, its
   parameters, seed, fold and data with the rule-1 hashes, so nothing else about it differs.

Then the rows get rule 2's hashes and fingerprint, and ``provenance.restamped`` records the old
values and the commit checked; scores, timings and ``git_commit`` stay as computed. A row that
fails a check is left as it is and named with the reason: the report flags it as other code's
and ``segbench run`` recomputes it. Written here rather than found in a library because it
replays this project's own hashing rules.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock

import yaml

from bench import provenance as prov
from bench import runner
from bench.config import parse_config
from bench.datasets import load_splits
from bench.datasets.root import REPO_ROOT
from bench.errors import SegbenchError
from bench.methods import build_method, method_module
from bench.rows import write_row

#: Rule 1's modules left out of the hash (the method registry only).
RULE1_NOT_HASHED = frozenset({"bench.methods"})


def _git(*args: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, check=True
    ).stdout


@cache
def _tree(commit: str) -> frozenset[str]:
    return frozenset(_git("ls-tree", "-r", "--name-only", commit).decode().splitlines())


@cache
def _blob(commit: str, path: str) -> bytes:
    return _git("show", f"{commit}:{path}")


def _here(path: str) -> bytes:
    """A file of this checkout."""
    return (REPO_ROOT / path).read_bytes()


def _module_path(name: str, files: frozenset[str]) -> str | None:
    if name.split(".")[0] not in prov.PROJECT_PACKAGES:
        return None
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if candidate in files:
            return candidate
    return None


def closure_at(commit: str, modules: tuple[str, ...], not_hashed: frozenset[str]) -> list[str]:
    """Paths of the project files ``modules`` import at ``commit`` (as :func:`code_files`)."""
    files = _tree(commit)
    seen: dict[str, str] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or (name in not_hashed and name not in modules):
            continue
        path = _module_path(name, files)
        if path is None:
            continue
        seen[name] = path
        source = _blob(commit, path)
        todo.extend(prov._imports(Path(path), name, source) - set(seen))
    return sorted(set(seen.values()))


def rule1_code_hash(commit: str, module: str) -> str:
    """The code hash rule 1 gave a row of ``module`` computed at ``commit``."""
    paths = closure_at(commit, (module, *prov.HARNESS_MODULES), RULE1_NOT_HASHED)
    digest = hashlib.sha256()
    # rule 1 sorted the files as paths (part by part), then hashed their repository paths
    for path in sorted(paths, key=lambda p: PurePosixPath(p).parts):
        digest.update(path.encode() + b"\0")
        digest.update(_blob(commit, path) + b"\0")
    return digest.hexdigest()[:16]


def rule1_lock_hash(commit: str) -> str:
    """The lock hash rule 1 gave a row computed at ``commit``: the whole lock file's."""
    try:
        return hashlib.sha256(_blob(commit, "requirements.lock")).hexdigest()[:16]
    except subprocess.CalledProcessError:
        return ""


def unchanged_since(commit: str, module: str) -> str | None:
    """None when rule 2's files and pins for ``module`` are the same at ``commit`` and here."""
    modules = (module, *prov.HARNESS_MODULES)
    here = sorted({prov.file_key(p) for m in modules for p in prov.code_files(m)})
    there = closure_at(commit, modules, prov.NOT_HASHED)
    if here != there:
        return f"rule 2 hashes other files for {module} at {commit}"
    for path in here:
        if _blob(commit, path) != _here(path):
            return f"{path} changed since {commit}"
    try:
        old_lock = _blob(commit, "requirements.lock").decode()
    except subprocess.CalledProcessError:
        return f"no lock file at {commit}"
    if prov.dependency_pins(*modules, lock_text=old_lock) != prov.dependency_pins(*modules):
        return f"a pinned package of {module} changed since {commit}"
    return None


def _units(folder: Path) -> dict[tuple, list[tuple[Path, dict]]]:
    units: dict[tuple, list[tuple[Path, dict]]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        row = json.loads(path.read_text())
        base = row.get("crf_of") or row["method"]
        units[(base, row.get("seed"), row.get("fold"))].append((path, row))
    return units


def restamp_group(folder: Path, dry_run: bool = False) -> list[tuple[str, str]]:
    """Restamp the rows of one config group; ``(row file, what happened)`` for each."""
    cfg = parse_config(yaml.safe_load((folder / "config.yaml").read_text()), source=str(folder))
    specs = {s.id: s for s in cfg.methods}
    data_ids: dict[Any, str] = {}
    head = prov.git_state()[0]
    out = []
    for (base, seed, fold), members in _units(folder).items():
        names = [p.name for p, _ in members]
        reason = _check_unit(cfg, specs.get(base), members, seed, fold, data_ids)
        if isinstance(reason, str):
            out += [(n, f"left: {reason}") for n in names]
            continue
        if reason is None:
            out += [(n, "already rule 2") for n in names]
            continue
        for (path, row), (code, lock, fp) in zip(members, reason, strict=True):
            old = row["provenance"]
            if not dry_run:
                row["provenance"] = {
                    **old, "code_hash": code, "lock_hash": lock,
                    "restamped": {
                        "rule": 2, "checked_at": head, "code_hash": old["code_hash"],
                        "lock_hash": old["lock_hash"], "fingerprint": row["fingerprint"],
                    },
                }  # fmt: skip
                row["fingerprint"] = fp
                write_row(path, row)
            out.append((path.name, f"restamped (computed at {old['git_commit']})"))
    return out


def _check_unit(cfg, spec, members, seed, fold, data_ids):  # noqa: ANN001, ANN202
    """A reason to leave the unit, None when it is rule 2 already, else its new stamps."""
    if spec is None:
        return "its method id is not in the group's config.yaml"
    rows = [r for _, r in members]
    if any(r.get("status") != "ok" for r in rows):
        return "a failed row (recomputed by the next run)"
    provs = [r.get("provenance") or {} for r in rows]
    commits = {p.get("git_commit") for p in provs}
    if len(commits) != 1 or not next(iter(commits)) or any(p.get("dirty") for p in provs):
        return "no single clean commit"
    commit = next(iter(commits))
    modules = {r["method"]: method_module(r["method_name"]) for r in rows}
    base_module = method_module(spec.name)
    if not all(m.split(".")[0] in prov.PROJECT_PACKAGES for m in modules.values()):
        return "a method from outside the project"
    current = [(prov.method_code_hash(modules[r["method"]]), prov.lock_hash()) for r in rows]
    if all((p["code_hash"], p["lock_hash"]) == c for p, c in zip(provs, current, strict=True)):
        return None
    try:
        for row, p in zip(rows, provs, strict=True):
            if p["code_hash"] != rule1_code_hash(commit, modules[row["method"]]):
                return f"its code hash is not rule 1's at {commit}"
            if p["lock_hash"] != rule1_lock_hash(commit):
                return f"its lock hash is not rule 1's at {commit}"
        for module in {base_module, *modules.values()}:
            changed = unchanged_since(commit, module)
            if changed:
                return changed
    except subprocess.CalledProcessError:
        return f"commit {commit} is not in this repository"
    if fold not in data_ids:
        data_ids[fold] = runner.data_identity(*load_splits(cfg, fold))
    method = build_method(
        spec.name, runner.seeded_params(spec.name, spec.params, seed, runner.RUNS_DIR)
    )
    stage = None
    if spec.crf is not None:
        stage = build_method("dense_crf", runner.seeded_params("dense_crf", spec.crf, seed))

    def fingerprint() -> str:
        return runner.fingerprint(cfg, spec, seed, data_ids[fold], method, stage, fold)

    with (
        mock.patch.object(runner, "method_code_hash", lambda m: rule1_code_hash(commit, m)),
        mock.patch.object(runner, "lock_hash", lambda: rule1_lock_hash(commit)),
    ):
        old_fp = fingerprint()
    if any(r["fingerprint"] != old_fp for r in rows):
        return "its fingerprint is not the runner's for its config, parameters and data"
    new_fp = fingerprint()
    return [(prov.method_code_hash(modules[r["method"]]), prov.lock_hash(), new_fp) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.restamp", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--store", default=str(runner.REFERENCE_DIR), help="default: results/")
    parser.add_argument("--dry-run", action="store_true", help="check and tell, write nothing")
    args = parser.parse_args(argv)
    groups = sorted(p.parent for p in Path(args.store).glob("rows/*/*/config.yaml"))
    counts: dict[str, int] = defaultdict(int)
    try:
        for folder in groups:
            for name, what in restamp_group(folder, args.dry_run):
                counts[what.split(" ")[0].rstrip(":")] += 1
                print(f"{folder.relative_to(args.store)}/{name}: {what}")
    except SegbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
