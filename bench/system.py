"""What machine a row was measured on, and how much memory a step took."""

from __future__ import annotations

import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path

from bench.provenance import git_state

_PACKAGES = (
    "numpy", "scipy", "scikit-learn", "scikit-image", "torch", "pydensecrf2", "pandas", "pillow",
)  # fmt: skip
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def cpu_model() -> str:
    """The CPU's model name (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path) -> str:
    """HEAD's commit of ``repo``, with ``-dirty`` when tracked files outside ``results/``
    changed (:func:`bench.provenance.git_state`); "" outside git."""
    commit, dirty = git_state(repo)
    return commit + ("-dirty" if dirty else "")


def environment(repo: Path) -> dict[str, str | int]:
    """Package versions, CPU, threads and commit: what a reader needs to reproduce a row."""
    env: dict[str, str | int] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "git_commit": git_commit(repo),
    }
    for name in _PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = ""
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    else:
        env["device"] = "cpu"
    return env


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False if it can't."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB; None without it."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (0 where /proc is not available)."""
    rss = _status_mb("VmRSS")
    return 0.0 if rss is None else rss


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_rss`, in MiB.

    Without the reset (not Linux), it is the peak since the process started, an upper bound.
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
