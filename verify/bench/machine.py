"""The machine a benchmark runs on: CPU model, device, load average."""

from __future__ import annotations

import os
import platform
from typing import Optional


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> Optional[list]:
    """1, 5 and 15 minute load averages: other work on the machine slows every
    timing (the ratios are taken in the same run, but not at the same instant)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    import jax
    dev = jax.devices()[0]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return dict(platform=platform.platform(), cpu_model=cpu_model(), cpu_count=os.cpu_count(),
                cpus_usable=usable, backend=jax.default_backend(), device_kind=dev.device_kind,
                device_count=jax.device_count(), jax=jax.__version__)
