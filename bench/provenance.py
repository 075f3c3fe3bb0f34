"""What computed a row: a hash of the project code a method runs, the lock file, the commit.

A row is reused on a rerun only when its fingerprint matches, and the fingerprint includes
:func:`code_hash` of the method's module, so a change to the method, to anything of the project
it imports, or to the harness code that scores it, recomputes the row instead of keeping a
number older code produced.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import subprocess
from functools import cache
from pathlib import Path

from bench.datasets.root import REPO_ROOT

#: The project's own top-level packages: imports of anything else (NumPy, torch...) are pinned
#: by the lock file instead.
PROJECT_PACKAGES = ("bench", "baselines", "deep")
LOCK_FILE = REPO_ROOT / "requirements.lock"
#: Harness modules whose code decides a row's numbers whatever the method: loading, resizing,
#: scoring, the row's fields. The runner and its imports.
HARNESS_MODULES = ("bench.runner",)
#: Imported by the runner but deciding no number: the registry maps names to modules (each
#: method's own module is hashed), so registering a new method does not recompute every row.
NOT_HASHED = frozenset({"bench.methods"})


def _module_file(name: str, any_package: bool = False) -> Path | None:
    if not any_package and name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports(path: Path, module: str) -> set[str]:
    """Project modules ``module`` (in ``path``) imports, at any depth of its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            # ``from bench.datasets import camvid`` imports a submodule
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # a submodule import runs its parents' __init__ too
    with_parents = set(found)
    for name in found:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return {n for n in with_parents if n.split(".")[0] in PROJECT_PACKAGES}


@cache
def code_files(module: str) -> tuple[Path, ...]:
    """Source files of ``module`` and every project module it imports, transitively.

    Read from the source (``ast``), not from ``sys.modules``: the answer must not depend on
    what else the process happened to import before.
    """
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or (name in NOT_HASHED and name != module):
            continue
        # A method from outside the project (``package.module:Class``): its own module is
        # hashed too, so that editing it recomputes its rows; what it imports from outside the
        # project is covered by the lock file at best (see the README).
        path = _module_file(name, any_package=name == module)
        if path is None:
            continue
        seen[name] = path
        todo.extend(_imports(path, name) - set(seen))
    return tuple(sorted(set(seen.values())))


def code_hash(*modules: str) -> str:
    """SHA-256 (16 hex digits) of the source of ``modules`` and all they import (see above)."""
    files = sorted({p for m in modules for p in code_files(m)})
    digest = hashlib.sha256()
    for path in files:
        where = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path.name
        digest.update(Path(where).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def method_code_hash(module: str) -> str:
    """:func:`code_hash` of a method's module together with the harness that scores it."""
    return code_hash(module, *HARNESS_MODULES)


def lock_hash(path: Path = LOCK_FILE) -> str:
    """SHA-256 (16 hex digits) of the lock file (the pinned package versions)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path.is_file() else ""


def git_state(repo: Path = REPO_ROOT) -> tuple[str, bool]:
    """HEAD's commit (12 digits) and whether tracked files outside ``results/`` changed.

    ``results/`` is left out because the runner and the report write there: a checkout whose
    only changes are new result rows ran committed code. ("", False) outside git.
    """
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        changes = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no",
             "--", ".", ":(exclude)results"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "", False
    return commit, bool(changes)


def provenance(module: str) -> dict[str, str | bool]:
    """The ``provenance`` field of a row of a method defined in ``module``."""
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "dirty": dirty,
        "code_hash": method_code_hash(module),
        "lock_hash": lock_hash(),
    }
