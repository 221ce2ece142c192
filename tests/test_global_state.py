"""No global state on import (issue 14): float32 by default, float64 on request.

``import sparsity_theory`` must leave JAX's defaults alone; float64 comes from
``sparsity_theory.enable_x64()``, the ``sparsity_theory.x64()`` context manager
or ``JAX_ENABLE_X64=1``. The import checks run in fresh interpreters, because
this test process has 64-bit mode on (tests/conftest.py turns it on). The
float32 checks of the library run there too, with JAX's warnings turned into
errors, so that a silent float64 -> float32 truncation fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsity_theory as st
from sparsity_theory import _checks, gaussian_laws

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds per fresh interpreter (compiling is slow on a loaded CI machine)


def _run_python(code: str, x64_env: str | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (JAX_ENABLE_X64 unset unless given)
    and return the JSON object it prints on its last line of stdout."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("JAX_ENABLE_X64", None)
    if x64_env is not None:
        env["JAX_ENABLE_X64"] = x64_env
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# What a fresh interpreter sees of JAX's defaults, printed as JSON.
DEFAULTS = """
    def defaults():
        import jax, jax.numpy as jnp
        return {"x64": bool(jax.config.jax_enable_x64),
                "zeros": str(jnp.zeros(1).dtype),
                "normal": str(jax.random.normal(jax.random.PRNGKey(0), (2,)).dtype),
                "arange": str(jnp.arange(3).dtype)}
"""


def test_import_leaves_jax_defaults_alone():
    out = _run_python(DEFAULTS + """
    import json
    before = defaults()
    import sparsity_theory, sparsity_theory.llm  # the whole package, llm included
    print(json.dumps({"before": before, "after": defaults(),
                      "reported": sparsity_theory.x64_enabled()}))
    """)
    expected = {"x64": False, "zeros": "float32", "normal": "float32", "arange": "int32"}
    assert out["before"] == expected
    assert out["after"] == expected
    assert out["reported"] is False


def test_enable_x64_turns_64_bit_mode_on_and_off():
    out = _run_python(DEFAULTS + """
    import json
    import sparsity_theory as st
    st.enable_x64()
    on = defaults()
    st.enable_x64(False)
    off = defaults()
    print(json.dumps({"on": on, "off": off}))
    """)
    assert out["on"] == {"x64": True, "zeros": "float64", "normal": "float64", "arange": "int64"}
    assert out["off"] == {"x64": False, "zeros": "float32", "normal": "float32", "arange": "int32"}


def test_environment_variable_turns_64_bit_mode_on():
    out = _run_python(DEFAULTS + """
    import json, jax
    import sparsity_theory as st
    x = st.sample_inputs(jax.random.PRNGKey(0), 8, 2, st.Gaussian()).x
    print(json.dumps(dict(defaults(), sampled=str(x.dtype))))
    """, x64_env="1")
    assert out == {"x64": True, "zeros": "float64", "normal": "float64", "arange": "int64",
                   "sampled": "float64"}


def test_context_manager_restores_the_previous_mode():
    """In this process 64-bit mode is on (conftest): a block turns it off and
    back, also when the block raises, and blocks nest."""
    assert st.x64_enabled()
    with st.x64(False):
        assert not st.x64_enabled()
        assert jnp.zeros(1).dtype == jnp.float32
        assert jax.random.normal(jax.random.PRNGKey(0), (2,)).dtype == jnp.float32
        with st.x64():
            assert jnp.zeros(1).dtype == jnp.float64
        assert jnp.zeros(1).dtype == jnp.float32
    assert st.x64_enabled() and jnp.zeros(1).dtype == jnp.float64
    with pytest.raises(RuntimeError, match="inside"):
        with st.x64(False):
            raise RuntimeError("inside")
    assert st.x64_enabled()


def test_context_manager_in_a_fresh_interpreter():
    out = _run_python(DEFAULTS + """
    import json
    import sparsity_theory as st
    with st.x64():
        inside = defaults()
    print(json.dumps({"inside": inside, "after": defaults()}))
    """)
    assert out["inside"]["zeros"] == "float64" and out["inside"]["normal"] == "float64"
    assert out["after"] == {"x64": False, "zeros": "float32", "normal": "float32",
                            "arange": "int32"}


# The public functions on float32 inputs without 64-bit mode; every dtype of
# every output leaf, printed as JSON. Warnings are errors: JAX only warns when
# it truncates a float64 request to float32.
CORE_FLOAT32 = """
    import json, warnings
    warnings.simplefilter("error")
    import jax, jax.numpy as jnp
    import sparsity_theory as st

    def dtypes(tree):
        return sorted({str(a.dtype) for a in jax.tree_util.tree_leaves(tree)})

    key = jax.random.PRNGKey(0)
    inputs = st.sample_inputs(key, 32, 4, st.Gaussian(), "cross")
    weights = st.gaussian_weights(jax.random.fold_in(key, 1), 4)
    q, k, v = st.project(inputs, weights)
    u = st.attention_logits(q, k)
    dense = st.evaluate_rows(q, k, windows=(1, 4), eps=(1e-3, 1e-50))
    streamed = st.stream_rows(q, k, windows=(1, 4), eps=(1e-3, 1e-50))
    out = {
        "x64": bool(jax.config.jax_enable_x64),
        "samplers": dtypes([inputs, weights, st.orthogonal_weights(key, 4),
                            st.Uniform().sample(key, (3,)), st.Rademacher().sample(key, (3,))]),
        "exact_attention": dtypes(st.exact_attention(q, k, v)),
        "sparse_attention": dtypes(st.sparse_attention(q, k, v, 4)),
        "sparse_attention_errors": dtypes(st.sparse_attention_errors(u, (1, 4), v)),
        "log_tail_mass": dtypes(st.log_tail_mass(u, (1, 4))),
        "log_kth_smallest_entry": dtypes(st.log_kth_smallest_entry(u, 3)),
        "evaluate_rows": dtypes(st.evaluate_rows(q, k, v, windows=(1, 4), eps=(1e-3, 1e-50))),
        "stream_rows": dtypes(st.stream_rows(q, k, v, windows=(1, 4), eps=(1e-3, 1e-50))),
        # eps = 1e-50 is below the float32 range, log eps = -115.1 is not: of
        # e^-200 and e^-100 (relative to e^0) only the first is below eps.
        "num_small_1e-50": int(st.num_small_entries(
            jnp.array([[0.0, -200.0, -100.0]], jnp.float32), 1e-50)[0]),
        # eps traced inside jit: its log is taken in the widest float available.
        "certified_window_jit": dtypes(jax.jit(st.certified_window)(u, 1e-3)),
        # The same rows through both engines: the counts agree exactly (the
        # streamed certified window is censored at max(windows) + 1 = 5).
        "engines_agree": bool(jnp.all(dense.num_small == streamed.num_small) & jnp.all(
            jnp.minimum(dense.certified_window, 5) == streamed.certified_window)),
        "collapse_length_law": st.gaussian_laws.collapse_length_law(1e-3, 1.0, 0.1),
    }
    print(json.dumps(out))
"""


def test_core_functions_run_in_float32_without_x64():
    out = _run_python(CORE_FLOAT32)
    assert out.pop("x64") is False
    assert out.pop("engines_agree") is True
    assert out.pop("num_small_1e-50") == 1
    # A host-side search: its answer must not depend on the mode (float32 gave 1).
    assert out.pop("collapse_length_law") == gaussian_laws.collapse_length_law.__wrapped__(
        1e-3, 1.0, 0.1) == 64287
    expected = {name: ["float32"] for name in out}
    expected.update(evaluate_rows=["float32", "int32"], stream_rows=["float32", "int32"],
                    certified_window_jit=["int32"])  # counts are the default integer
    assert out == expected


# Every way to ask for float64 explicitly.
FLOAT64_REQUESTS = {
    "Gaussian.sample": lambda key, dt: st.Gaussian().sample(key, (2,), dt),
    "Uniform.sample": lambda key, dt: st.Uniform().sample(key, (2,), dt),
    "Rademacher.sample": lambda key, dt: st.Rademacher().sample(key, (2,), dt),
    "sample_inputs": lambda key, dt: st.sample_inputs(key, 4, 2, st.Gaussian(), dtype=dt).x,
    "gaussian_weights": lambda key, dt: st.gaussian_weights(key, 2, dtype=dt).query,
    "orthogonal_weights": lambda key, dt: st.orthogonal_weights(key, 2, dtype=dt).query,
}


@pytest.mark.parametrize("name", sorted(FLOAT64_REQUESTS))
@pytest.mark.parametrize("dtype", [jnp.float64, np.float64, "float64"])
def test_float64_request_without_x64_raises(name, dtype):
    key = jax.random.PRNGKey(0)
    with st.x64(False):
        with pytest.raises(ValueError, match=r"enable_x64\(\)") as info:
            FLOAT64_REQUESTS[name](key, dtype)
        assert "\n" not in str(info.value)
        # The default and float32 work, and give float32.
        assert FLOAT64_REQUESTS[name](key, None).dtype == jnp.float32
        assert FLOAT64_REQUESTS[name](key, jnp.float32).dtype == jnp.float32
    # With 64-bit mode on, the same request is honoured.
    assert FLOAT64_REQUESTS[name](key, dtype).dtype == jnp.float64


def test_cast_weights_float64_without_x64_raises():
    from sparsity_theory import llm

    weights = {"w": np.ones((2, 2), np.float32)}
    with st.x64(False):
        with pytest.raises(ValueError, match=r"enable_x64\(\)"):
            llm.cast_weights(weights, "float64")
        assert llm.cast_weights(weights, "bfloat16")["w"].dtype == jnp.bfloat16
    assert llm.cast_weights(weights, "float64")["w"].dtype == jnp.float64


def test_check_dtype():
    with st.x64(False):
        assert _checks.check_dtype(None) == np.float32
        assert _checks.check_dtype("float32") == np.float32
        with pytest.raises(ValueError, match="int64"):
            _checks.check_dtype(np.int64)
    assert _checks.check_dtype(None) == np.float64
    assert _checks.check_dtype(jnp.float64) == np.float64
    with pytest.raises(ValueError, match="must be a dtype"):
        _checks.check_dtype("not a dtype")


def test_functions_keep_float32_with_x64_on():
    """With 64-bit mode on, float32 inputs still give float32 outputs."""
    key = jax.random.PRNGKey(3)
    inputs = st.sample_inputs(key, 16, 3, st.Gaussian(), "cross", dtype=jnp.float32)
    q, k, v = st.project(inputs, st.gaussian_weights(key, 3, dtype=jnp.float32))
    assert q.dtype == jnp.float32
    stats = st.evaluate_rows(q, k, v, windows=(2,), eps=(1e-3,))
    assert stats.log_tail_mass.dtype == jnp.float32
    assert st.stream_rows(q, k, v, windows=(2,), eps=(1e-3,)).log_l2_error.dtype == jnp.float32
    assert st.sparse_attention_errors(st.attention_logits(q, k), (2,)).log_l1.dtype == jnp.float32


def _console_script() -> Path:
    return Path(sys.executable).parent / "sparsity-verify"


@pytest.mark.skipif(not _console_script().exists(), reason="console script not installed")
def test_cli_list_runs():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run([str(_console_script()), "list"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "lemma42" in proc.stdout


def test_cli_enables_x64_before_running_the_suites(tmp_path):
    """``sparsity-verify run`` turns 64-bit mode on before the runner runs (the
    runner is replaced by a stub that records the mode and returns None, as a
    non-primary process does)."""
    out = _run_python(f"""
    import json, jax, jax.numpy as jnp
    from verify import cli, runner
    before = bool(jax.config.jax_enable_x64)
    seen = {{}}

    def stub(*args, **kwargs):
        seen.update(x64=bool(jax.config.jax_enable_x64), zeros=str(jnp.zeros(1).dtype))
        return None

    runner.run = stub
    code = cli.main(["run", "lemma42", "--no-progress", "--out", {str(tmp_path / "out")!r}])
    print(json.dumps(dict(seen, before=before, code=code)))
    """)
    assert out == {"before": False, "x64": True, "zeros": "float64", "code": 0}
