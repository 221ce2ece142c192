"""Independent seeds spread over devices and processes, with JAX's own machinery.

A probabilistic suite evaluates one function per PRNG key; the keys are
independent trials, so the seed axis shards without communication.
:func:`map_seeds` runs ``vmap(fn)`` over a 1-D mesh of *all* global devices
(axis ``"seeds"``, :func:`seed_mesh`) with ``jax.shard_map``: on one machine that
is every local device (a GPU or several, or CPU devices made with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``); after
:func:`initialize_distributed` it is every device of every process
(multi-controller SPMD: each process runs the same program, calls
``map_seeds`` with the same keys in the same order, and gets the full result).

Numerics: each device evaluates ``vmap(fn)`` on its slice of the seeds, so a
per-seed result equals a one-device run's exactly when ``fn``'s numerics do not
depend on the vmap batch size. Elementwise work, random draws and per-seed
reductions do not; XLA:CPU's matrix products can (a matrix product batched over
seeds is a GEMM whose blocking, and so its summation order, depends on the
batch size), which changes such outputs in the last bits. On one device the
result is bitwise that of ``jit(vmap(fn))`` over the whole batch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Hashable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "seeds"


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
    """Join a multi-process JAX run (one process per host, or several per host).

    With no arguments ``jax.distributed.initialize`` detects the cluster (SLURM,
    Open MPI, TPU pods, ...); otherwise pass the coordinator's ``HOST:PORT``, the
    number of processes and this process's id (0 is the primary). CPU
    cross-process collectives use gloo unless another implementation (mpi) was
    chosen (the setting touches only the CPU backend). Call it before any other
    JAX computation.
    """
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def is_primary() -> bool:
    """Whether this is process 0: the one that prints and writes files."""
    return jax.process_index() == 0


def process_info() -> dict[str, int]:
    """This process's place in the run, for provenance."""
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_device_count": jax.local_device_count(),
            "global_device_count": jax.device_count()}


def broadcast_from_primary(values: np.ndarray) -> np.ndarray:
    """The primary process's ``values`` on every process (the same shape and
    dtype must be passed everywhere; other processes' values are ignored)."""
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values)))


def seed_mesh() -> Mesh:
    """A 1-D mesh over all global devices (``jax.devices()``), axis ``"seeds"``."""
    return Mesh(np.asarray(jax.devices()), (AXIS,))


def padded_count(seeds: int, devices: int) -> int:
    """``seeds`` rounded up to a multiple of ``devices``."""
    return -(-seeds // devices) * devices


def cache_key(fn: Callable) -> Hashable:
    """A key under which equal functions compare equal: a ``functools.partial``
    is keyed by its function and bound arguments (which must be hashable), so a
    partial rebuilt with the same configuration reuses the compiled program."""
    if isinstance(fn, functools.partial):
        return ("partial", cache_key(fn.func), fn.args, tuple(sorted(fn.keywords.items())))
    return fn


_COMPILED: dict[tuple, Callable] = {}


def _compiled(fn: Callable, mesh: Mesh, num_args: int, key_impl) -> Callable:
    """The jitted ``vmap(fn)`` with its seed axis sharded over ``mesh``; built once
    per (fn, mesh, arity, key type), and jit compiles once per input shapes."""
    key = (cache_key(fn), mesh, num_args, key_impl)
    if key not in _COMPILED:
        def batched(keys, *args):
            if key_impl is not None:
                keys = jax.random.wrap_key_data(keys, impl=key_impl)
            return jax.vmap(fn, in_axes=(0,) + (None,) * num_args)(keys, *args)
        _COMPILED[key] = jax.jit(jax.shard_map(
            batched, mesh=mesh, in_specs=(P(AXIS),) + (P(),) * num_args, out_specs=P(AXIS)))
    return _COMPILED[key]


def _global(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _to_host(out: jax.Array, seeds: int) -> np.ndarray:
    if out.is_fully_addressable:
        full = np.asarray(out)
    else:
        full = multihost_utils.process_allgather(out, tiled=True)
    return full[:seeds]


def map_seeds(fn: Callable, keys, *args: Any):
    """``jax.vmap(fn, in_axes=(0, None, ...))(keys, *args)`` with the seed axis
    (the leading axis of ``keys``) sharded over :func:`seed_mesh`.

    The seeds are padded to a multiple of the device count by repeating the last
    key, and the padding is dropped again. ``args`` (pytrees of arrays) are
    replicated. Every process must pass the same ``keys`` and ``args``; each gets
    the full result as host NumPy arrays, in the pytree structure of ``fn``'s
    output. ``fn`` should be a module-level function (static configuration bound
    with ``functools.partial``), so that its compiled program is reused.
    """
    mesh = seed_mesh()
    key_impl = None
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        key_impl = jax.random.key_impl(keys)
        keys = jax.random.key_data(keys)
    keys = np.asarray(keys)
    seeds = keys.shape[0]
    if seeds < 1:
        raise ValueError("map_seeds needs at least one key.")
    padded = padded_count(seeds, mesh.size)
    if padded > seeds:
        keys = np.concatenate([keys, np.repeat(keys[-1:], padded - seeds, axis=0)])
    replicated = NamedSharding(mesh, P())
    key_array = _global(keys, NamedSharding(mesh, P(AXIS)))
    arg_arrays = jax.tree.map(lambda a: _global(np.asarray(a), replicated), args)
    out = _compiled(fn, mesh, len(args), key_impl)(key_array, *arg_arrays)
    return jax.tree.map(lambda a: _to_host(a, seeds), out)
