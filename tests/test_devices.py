"""verify/devices.py: seeds sharded over devices and processes.

The cross-device tests start fresh interpreters (``sys.executable``): four
virtual CPU devices (``--xla_force_host_platform_device_count=4``), one device,
and two processes joined with ``jax.distributed`` on 127.0.0.1. Every child has a
timeout, so a hang fails the test instead of blocking CI.

What is bitwise identical across device and process counts, and what is not:
``map_seeds`` of elementwise work, random draws and per-seed reductions is
identical. ``sample_row_scores`` multiplies a weight matrix by the query rows of
all seeds on a device at once: XLA:CPU makes that one GEMM over the device's
batch of seeds, and its blocking (so the order of each dot product's additions)
depends on the batch size. A device holding a quarter of the seeds therefore
rounds sigma, mu and the scores differently in the last bits (relative
differences ~1e-16, ~1e-13 for scores near zero). The same happens on one device
when only the chunk size changes (tests/test_sampling.py), so these outputs are
compared to rounding; the seeds, shapes and padding are checked exactly.
"""

import functools
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from verify import devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240  # seconds for any group of children (generous: CI machines may be loaded)

# The sweep each child runs; argv: output .npz [coordinator num_processes process_id].
WORKER = textwrap.dedent("""
    import sys
    from verify import devices
    if len(sys.argv) > 2:
        devices.initialize_distributed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    import jax
    import jax.numpy as jnp
    import numpy as np
    import sparsity_theory as st
    from verify import sampling
    st.enable_x64()  # a fresh interpreter: float64, as the tests compare at rtol 1e-12

    def draws(key, shift):
        z = jax.random.normal(key, (6,)) + shift
        return {"z": z, "stats": (jnp.sum(jnp.exp(z)), jnp.argmax(z), jnp.cumsum(z)[-1])}

    out = {"process_count": jax.process_count(), "device_count": jax.device_count()}
    rows = sampling.sample_row_scores(st.Gaussian(1.0), 32, 4, "cross", 13, 3)  # 13 seeds
    out.update({f"rows_{k}": v for k, v in rows._asdict().items() if v is not None})
    sampling.SEED_CHUNK_ELEMENTS = 3 * 16 * 2  # chunks of 3 seeds, rounded up per device
    s = sampling.sample_row_scores(
        st.Rademacher(1.0), 16, 2, "self", 7, 6, weights="orthogonal",
        summary=lambda r: {"log_alpha": r.log_normaliser(), "diagonal": r.diagonal})
    out.update({f"summary_{k}": v for k, v in s.items()})
    for seeds in (7, 1):
        keys = jax.random.split(jax.random.PRNGKey(seeds), seeds)
        res = devices.map_seeds(draws, keys, jnp.float64(0.25))
        out[f"map{seeds}_z"] = res["z"]
        out.update({f"map{seeds}_stat{j}": a for j, a in enumerate(res["stats"])})
    np.savez(sys.argv[1], **out)
""")

# Outputs that go through a matrix product over the seeds of a device (see above).
ROUNDED = ("rows_", "summary_")

# The CLI on a smaller lemma42 sweep (2 models x 2 modes at n = 64) to keep CI fast.
CLI = textwrap.dedent("""
    import sys
    from verify.suites import lemma42
    lemma42.MODELS = {k: lemma42.MODELS[k] for k in ("gaussian", "rademacher")}
    lemma42.PRESETS["quick"] = dict(lemma42.PRESETS["quick"], lengths=(64,))
    from verify import cli
    sys.exit(cli.main(sys.argv[1:]))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(device_count: int = 1) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    if device_count > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={device_count}"
    return env


def _run_all(commands, timeout=TIMEOUT) -> list[str]:
    """Run ``(argv, device count)`` commands side by side; all must succeed
    within ``timeout`` seconds (children are killed otherwise). Returns stdout."""
    procs = []
    try:
        for argv, device_count in commands:
            procs.append(subprocess.Popen(argv, cwd=ROOT, env=_env(device_count), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, f"{p.args} failed ({p.returncode}):\n{err[-4000:]}"
            outputs.append(out)
        return outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict:
    """The worker's outputs on one device, four devices and two processes (each
    with one device), all run at once."""
    tmp = tmp_path_factory.mktemp("devices")
    worker = tmp / "worker.py"
    worker.write_text(WORKER)
    address = f"127.0.0.1:{_free_port()}"
    runs = {"one": ([], 1), "four": ([], 4), "process0": ([address, "2", "0"], 1),
            "process1": ([address, "2", "1"], 1)}
    _run_all([([sys.executable, str(worker), str(tmp / f"{name}.npz"), *extra], count)
              for name, (extra, count) in runs.items()])
    return {name: dict(np.load(tmp / f"{name}.npz")) for name in runs}


def _assert_same(got: dict, ref: dict) -> None:
    assert sorted(got) == sorted(ref)
    for name, a in ref.items():
        if name in ("process_count", "device_count"):
            continue
        b = got[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if name.startswith(ROUNDED) and a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13, err_msg=name)
        else:
            np.testing.assert_array_equal(b, a, err_msg=name)


def test_four_devices_match_one(sweeps):
    one, four = sweeps["one"], sweeps["four"]
    assert int(one["device_count"]) == 1 and int(four["device_count"]) == 4
    assert int(four["process_count"]) == 1
    assert four["rows_scores"].shape == (13, 32) and four["map7_z"].shape == (7, 6)
    _assert_same(four, one)


def test_two_processes_match_one(sweeps):
    for name in ("process0", "process1"):
        got = sweeps[name]
        assert int(got["process_count"]) == 2 and int(got["device_count"]) == 2
        _assert_same(got, sweeps["one"])
    for name, a in sweeps["process0"].items():  # both hold the very same gathered arrays
        np.testing.assert_array_equal(sweeps["process1"][name], a, err_msg=name)


def _same_json(a, b, where="") -> None:
    """Equal JSON values, floats to rounding (see the module docstring)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            _same_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12, nan_ok=True), where
    else:
        assert a == b and type(a) is type(b), where


def _cells(directory) -> dict:
    cells = {}
    for name in sorted(os.listdir(directory / "cells" / "lemma42")):
        with open(directory / "cells" / "lemma42" / name) as f:
            cells[name] = json.load(f)
    return cells


def test_cli_two_processes_match_one(tmp_path):
    """Two processes of ``sparsity-verify run --distributed`` against one plain run:
    the same cells; only the primary writes; the primary's saved cell is reused
    and a stale file in the other process's (unshared) directory is ignored."""
    cli = tmp_path / "cli.py"
    cli.write_text(CLI)
    base = [sys.executable, str(cli), "run", "lemma42", "--preset", "quick", "--seeds", "8",
            "--no-progress", "--out"]
    single, primary, other = tmp_path / "single", tmp_path / "primary", tmp_path / "other"
    _run_all([(base + [str(single)], 1)])
    reference = _cells(single)
    assert len(reference) == 4
    reused, stale = sorted(reference)[:2]
    (primary / "cells" / "lemma42").mkdir(parents=True)
    (other / "cells" / "lemma42").mkdir(parents=True)
    (primary / "cells" / "lemma42" / reused).write_text(json.dumps(reference[reused]))
    (other / "cells" / "lemma42" / stale).write_text(
        json.dumps(dict(reference[stale], result={"stale": True})))
    address = f"127.0.0.1:{_free_port()}"
    outputs = _run_all([(base + [str(d), "--distributed", "--coordinator", address,
                                 "--num-processes", "2", "--process-id", str(i)], 1)
                        for i, d in enumerate((primary, other))])
    # Only the primary prints (gloo itself may print a line on each process).
    assert "L4.2-P1" in outputs[0] and "L4.2-P1" not in outputs[1]
    assert os.listdir(other) == ["cells"] and _cells(other) == {
        stale: dict(reference[stale], result={"stale": True})}  # untouched
    got = _cells(primary)
    assert sorted(got) == sorted(reference)
    for name, ref in reference.items():
        assert got[name]["cell"] == ref["cell"]
        _same_json(got[name]["result"], ref["result"], name)
    with open(primary / "results.json") as f:
        results = json.load(f)
    assert results["cells_reused"] == 1
    assert results["processes"]["process_count"] == 2
    assert results["processes"]["global_device_count"] == 2
    assert (primary / "report.md").exists() and (primary / "claims.md").exists()


# In this process: one CPU device.

TRACES = []


def _traced(key, shift, *, power: int):
    TRACES.append(power)  # runs once per trace, not per call
    return jax.random.uniform(key, (3,)) ** power + shift


def test_map_seeds_matches_jit_of_vmap_and_pads():
    fn = functools.partial(_traced, power=2)
    reference = jax.jit(jax.vmap(fn, in_axes=(0, None)))
    for seeds in (1, 5):
        keys = jax.random.split(jax.random.PRNGKey(seeds), seeds)
        got = devices.map_seeds(fn, keys, 0.5)
        assert isinstance(got, np.ndarray) and got.shape == (seeds, 3)
        np.testing.assert_array_equal(got, np.asarray(reference(keys, 0.5)))
    typed = jax.random.split(jax.random.key(3), 4)
    np.testing.assert_array_equal(devices.map_seeds(fn, typed, 0.0),
                                  np.asarray(reference(typed, 0.0)))
    assert [devices.padded_count(s, 4) for s in (1, 4, 5, 13)] == [4, 4, 8, 16]
    with pytest.raises(ValueError, match="at least one"):
        devices.map_seeds(fn, np.zeros((0, 2), np.uint32), 0.0)


def test_map_seeds_compiles_once_per_configuration_and_shape():
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    TRACES.clear()
    for shift in (0.0, 1.0):  # a new partial with equal configuration, new argument values
        devices.map_seeds(functools.partial(_traced, power=3), keys, shift)
    assert TRACES == [3]
    devices.map_seeds(functools.partial(_traced, power=3), keys[:4], 0.0)  # a new shape
    devices.map_seeds(functools.partial(_traced, power=5), keys, 0.0)  # a new configuration
    assert TRACES == [3, 3, 5]
    assert devices.cache_key(functools.partial(_traced, power=3)) == \
        devices.cache_key(functools.partial(_traced, power=3))


def test_process_info_and_mesh():
    info = devices.process_info()
    assert info["process_index"] == 0 and devices.is_primary()
    assert info["global_device_count"] == jax.device_count() == devices.seed_mesh().size
    assert devices.seed_mesh().axis_names == ("seeds",)
    np.testing.assert_array_equal(devices.broadcast_from_primary(np.arange(3)), np.arange(3))
