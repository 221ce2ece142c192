"""JAX's persistent compilation cache for ``sparsity-verify run``.

Half of a quick run on CPU is XLA compiling the suites' programs (one per shape,
sampler and window set), and it is the same work every run. The command turns on
JAX's persistent compilation cache, so that a second run loads the compiled
programs from disk: the quick preset took 426 s with an empty cache and 252 s
with a warm one (2 cores, docs/usage.md), with every cell's result equal.

The command, not the library, does this (importing ``sparsity_theory`` changes no
JAX setting). JAX keys each entry by the program, the JAX and jaxlib versions,
the backend, the device and the compiler flags, so a stale entry is never loaded
and a cached program computes what a fresh compilation does. The directory is
not pruned (JAX's default, no size limit): delete it to reclaim the space.

Where: ``--compilation-cache DIR``, else ``$SPARSITY_VERIFY_COMPILATION_CACHE``,
else ``jax-compilation-cache`` in the package's cache directory
(``$SPARSITY_THEORY_CACHE`` or ``~/.cache/sparsity-theory``, beside the model
files); ``off`` turns it off. A directory given explicitly that cannot be
written is an error; the default one only gives a warning (the run goes on
without the cache).
"""

from __future__ import annotations

import os
from typing import Optional

ENVIRONMENT = "SPARSITY_VERIFY_COMPILATION_CACHE"
OFF = "off"


def default_dir() -> str:
    from sparsity_theory.llm.fetch import cache_dir  # the package's cache directory

    return os.path.join(cache_dir(), "jax-compilation-cache")


def requested_dir(option: Optional[str]) -> tuple[Optional[str], bool]:
    """``(directory or None when off, whether it was asked for explicitly)`` from
    the command's option, else the environment, else :func:`default_dir`."""
    value = option if option is not None else os.environ.get(ENVIRONMENT)
    if value is None or not value.strip():
        return default_dir(), False
    if value.strip().lower() == OFF:
        return None, True
    return os.path.abspath(os.path.expanduser(value)), True


def usable(directory: str) -> Optional[str]:
    """None when ``directory`` exists (or is created) and is writable, else why not."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        return f"cannot create {directory}: {e.strerror or e}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory} is not writable"
    return None


def choose(option: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """``(directory to use or None, warning or None)`` for the command's option.

    Raises ValueError (one line) when a directory asked for explicitly cannot be
    used; the default directory that cannot be used gives a warning instead."""
    directory, explicit = requested_dir(option)
    why = usable(directory) if directory is not None else None
    if why is None:
        return directory, None
    if explicit:
        raise ValueError(f"compilation cache: {why} (--compilation-cache off runs without it)")
    return None, f"running without a compilation cache: {why}"


def enable(directory: str) -> None:
    """Turn on JAX's persistent compilation cache in ``directory`` for this
    process (call before the first compilation). Every program is cached, not only
    those that took JAX's default 1 s to compile: the suites compile hundreds of
    small ones."""
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def current_dir() -> Optional[str]:
    """The cache directory this process uses (None: no persistent cache)."""
    import jax

    return jax.config.jax_compilation_cache_dir
