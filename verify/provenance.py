"""What every result file records: versions, device, git commit, time, command."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata

from verify import compilation_cache


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    """The commit of the checkout this package runs from (``-dirty`` if modified)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=10,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git unavailable)"


def device_info() -> dict:
    import jax

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "count": len(devices),
        "kind": devices[0].device_kind if devices else "none",
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def provenance() -> dict:
    return {
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "git_commit": git_commit(),
        "versions": {
            "python": platform.python_version(),
            **{d: _version(d) for d in ("sparsity-theory", "jax", "jaxlib", "numpy", "scipy", "gguf",
                                        "tokenizers")},
        },
        "device": device_info(),
        # Where compiled programs were loaded from and saved to (None: compiled in
        # this run only); it changes how long a run takes, not what it computes.
        "compilation_cache": compilation_cache.current_dir(),
    }
