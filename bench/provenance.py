"""What computed a row: a hash of the project code a method runs, its pinned packages, the commit.

A row is reused on a rerun only when its fingerprint matches, and the fingerprint includes
:func:`method_code_hash` of the method's module, so a change to the method, to anything of the
project it imports, to the harness code that loads, scores and times it, or to the pinned
version of a package that code imports, recomputes the row instead of keeping a number older
code produced.

What is hashed is what decides a row's numbers, nothing more (rule 2, since round 2): project
modules that only parse configs, name errors or compute these hashes are left out
(:data:`NOT_HASHED`), and of the lock file only the lines that pin the distributions the hashed
code imports, with everything they require (:func:`dependency_pins`). Under rule 1 any edit to
a config message, or any package added to the lock file for another method, recomputed every
row. ``python -m bench.restamp`` moves rows of rule 1 to rule 2 where their code is unchanged.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
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
#: Imported by the runner but deciding no number, so an edit to them recomputes no row:
#: the registry maps names to modules (each method's own module is hashed); the config parser
#: hands on values that the fingerprint holds themselves (the config's identity, every
#: method's full parameters); the error class; this module, which only computes hashes.
NOT_HASHED = frozenset({"bench.methods", "bench.config", "bench.errors", "bench.provenance"})


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


def _imports(path: Path, module: str, source: bytes | None = None) -> set[str]:
    """Project modules ``module`` (in ``path``, or ``source`` when given) imports, at any depth."""
    text = path.read_bytes() if source is None else source
    tree = ast.parse(text.decode("utf-8"), filename=str(path))
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


def file_key(path: Path) -> str:
    """How a hashed file is named inside the hash: its path in the repository (POSIX)."""
    where = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path.name
    return Path(where).as_posix()


def hash_sources(sources: dict[str, bytes]) -> str:
    """SHA-256 (16 hex digits) of ``{file key: source}``, in key order."""
    digest = hashlib.sha256()
    for key in sorted(sources):
        digest.update(key.encode() + b"\0")
        digest.update(sources[key] + b"\0")
    return digest.hexdigest()[:16]


def code_hash(*modules: str) -> str:
    """SHA-256 (16 hex digits) of the source of ``modules`` and all they import (see above)."""
    files = {p for m in modules for p in code_files(m)}
    return hash_sources({file_key(p): p.read_bytes() for p in files})


def _canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Jinja2`` is ``jinja2``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names ``path`` imports from outside the project and the standard library."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return {
        n for n in names
        if n not in PROJECT_PACKAGES and n not in sys.stdlib_module_names and n != "__future__"
    }  # fmt: skip


@cache
def _distributions_of(import_names: frozenset[str]) -> frozenset[str]:
    """Installed distributions providing ``import_names``, with everything they require here.

    Requirements whose marker does not hold on this platform (``colorama; platform_system ==
    "Windows"``) or that only an extra asks for are left out, so that installing a package
    for another reason never changes what a method depends on.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    providers = importlib.metadata.packages_distributions()
    todo = [_canonical(d) for n in import_names for d in providers.get(n, [])]
    seen: set[str] = set()
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_canonical(req.name))
    return frozenset(seen)


def lock_pins(text: str) -> dict[str, str]:
    """``{canonical distribution name: its line}`` of a lock file's ``name==version`` lines."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==", line)
        if match:
            pins[_canonical(match.group(1))] = line
    return pins


def dependency_pins(*modules: str, lock_text: str | None = None) -> list[str]:
    """The lock-file lines that pin what the code of ``modules`` imports, sorted.

    The distributions are those providing the third-party imports of every hashed file of
    ``modules`` (:func:`code_files`), with their requirements, as installed here; their pins
    are read from ``lock_text`` (default: this checkout's lock file).
    """
    if lock_text is None:
        lock_text = LOCK_FILE.read_text() if LOCK_FILE.is_file() else ""
    names = frozenset(
        n for m in modules for p in code_files(m) for n in _third_party_imports(p)
    )  # fmt: skip
    pins = lock_pins(lock_text)
    return sorted(pins[d] for d in _distributions_of(names) if d in pins)


def _hash_lines(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16] if lines else ""


def method_code_hash(module: str) -> str:
    """What decides a method's rows: its code and the harness's, and the packages they import.

    SHA-256 (16 hex digits) of :func:`code_hash` of the method's module together with the
    harness that scores it, and of the lock-file pins of what that code imports
    (:func:`dependency_pins`).
    """
    modules = (module, *HARNESS_MODULES)
    return _hash_lines([code_hash(*modules), *dependency_pins(*modules)])


def lock_hash(*modules: str) -> str:
    """SHA-256 (16 hex digits) of the lock-file pins the code of ``modules`` depends on.

    Default: the harness's (:data:`HARNESS_MODULES`); a method's own pins are part of its
    :func:`method_code_hash`. A package added to the lock file for one method thus recomputes
    no other method's rows.
    """
    return _hash_lines(dependency_pins(*(modules or HARNESS_MODULES)))


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


def computed_by_other_code(row: dict) -> bool | None:
    """Whether ``row`` was computed by other code or packages than this checkout's.

    Compares the row's ``provenance`` code and lock hashes with what this checkout's files hash
    to (the hashes above). None when that cannot be said (a method from outside the
    project that does not import here, a row without provenance).
    """
    from bench.methods import method_module  # here: bench.methods imports every method

    prov = row.get("provenance") or {}
    if not prov.get("code_hash") or not row.get("method_name"):
        return None
    try:
        current = method_code_hash(method_module(str(row["method_name"])))
    except Exception:  # noqa: BLE001 - an unknown or unimportable method: cannot tell
        return None
    return prov["code_hash"] != current or prov.get("lock_hash") != lock_hash()
