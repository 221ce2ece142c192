"""verify/bench/suite_profile.py: the pytest plugin that splits each test file's
time into JAX compilation and the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from verify.bench import suite_profile as sp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each file compiles a program of its own (a new shape per file), so each has at
# least one backend compilation of its own to find.
TINY_TEST = textwrap.dedent("""
    import jax
    import jax.numpy as jnp

    def test_compiles():
        f = jax.jit(lambda x: jnp.sort(x) * 2.0 + 1.0)
        assert float(f(jnp.arange({n}, dtype=jnp.float32))[-1]) == 2.0 * {n} - 1.0

    def test_without_jax():
        assert sum(range({n})) == {n} * ({n} - 1) // 2
""")


def test_recorder_adds_each_stage_to_the_running_file_only():
    r = sp.Recorder()
    r.current = "tests/a.py"
    r.on_duration("/jax/core/compile/backend_compile_duration", 2.0)
    r.on_duration("/jax/core/compile/backend_compile_duration", 1.0)
    r.on_duration("/jax/core/compile/jaxpr_trace_duration", 0.5)
    r.on_duration("/jax/some/other/event", 100.0)  # not a compile stage: ignored
    r.add_test("tests/a.py", 5.0)
    r.current = "tests/b.py"
    r.on_duration("/jax/core/compile/jaxpr_to_mlir_module_duration", 0.25)
    a, b = r.files["tests/a.py"], r.files["tests/b.py"]
    assert (a["backend"], a["trace"], a["lower"], a["backend_compiles"]) == (3.0, 0.5, 0.0, 2)
    assert (a["tests"], a["test_s"]) == (1, 5.0)
    assert (b["lower"], b["backend"], b["backend_compiles"], b["tests"]) == (0.25, 0.0, 0, 0)


def test_merge_and_totals_sum_over_processes():
    one = {"x.py": dict(sp.empty_file_record(), tests=2, test_s=4.0, backend=1.0, backend_compiles=1)}
    two = {"x.py": dict(sp.empty_file_record(), tests=1, test_s=6.0, lower=2.0),
           "y.py": dict(sp.empty_file_record(), tests=3, test_s=10.0, trace=1.0)}
    files = sp.merge([one, two])
    assert files["x.py"]["tests"] == 3 and files["x.py"]["test_s"] == 10.0
    assert files["x.py"]["backend"] == 1.0 and files["x.py"]["lower"] == 2.0
    t = sp.totals(files)
    assert (t["tests"], t["test_s"], t["compile_s"], t["backend_compiles"]) == (6, 20.0, 4.0, 1)
    assert t["compile_share_of_test_time"] == pytest.approx(0.2)
    lines = sp.summary_lines(files)
    assert lines[1].endswith("x.py") and lines[2].endswith("y.py")  # slowest first
    assert "= 20%" in lines[-1] and "1 backend compilations" in lines[-1]


def _run_pytest(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "verify.bench.suite_profile",
         "-p", "no:cacheprovider", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")),
    )


def test_a_run_in_two_processes_records_each_files_compilations(tmp_path):
    # As the README runs the tests: pytest-xdist, one file per worker at a time.
    workers = "2"
    for name, n in (("test_first.py", 5), ("test_second.py", 7)):
        (tmp_path / name).write_text(TINY_TEST.format(n=n))
    out = tmp_path / "profile"
    done = _run_pytest(tmp_path, "-n", workers, "--dist", "loadfile", "--suite-profile-out", str(out),
                       "test_first.py", "test_second.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "suite profile: JAX compilation per test file" in done.stdout
    record = json.loads((out / "suite_profile.json").read_text())
    assert record["schema"] == sp.SCHEMA
    assert record["exit_status"] == 0 and record["outcomes"] == {"passed": 4}
    assert record["processes"] == int(workers)
    assert record["provenance"]["git_commit"] and record["machine"]["cpu_count"] >= 1
    files = record["files"]
    for name in ("test_first.py", "test_second.py"):
        f = files[name]
        assert f["tests"] == 2
        assert f["backend_compiles"] >= 1 and f["backend"] > 0.0
        assert 0.0 < f["backend"] + f["lower"] + f["trace"] <= f["test_s"]
    t = record["totals"]
    assert t["tests"] == 4 and 0.0 < t["compile_share_of_test_time"] <= 1.0
    table = (out / "suite_profile.md").read_text()
    assert f"{t['backend_compiles']} compilations" in table
    assert "| `test_first.py` | 2 |" in table and "| `test_second.py` | 2 |" in table


def test_an_unwritable_directory_is_refused_before_any_test_runs(tmp_path):
    (tmp_path / "test_first.py").write_text(TINY_TEST.format(n=5))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = _run_pytest(tmp_path, "--suite-profile-out", str(blocker / "sub"), "test_first.py")
    assert done.returncode == 4  # pytest's usage error
    assert "--suite-profile-out: cannot create" in done.stderr
    assert "passed" not in done.stdout


def test_one_process_counts_failures_and_skips_and_still_writes_the_profile(tmp_path):
    (tmp_path / "test_mixed.py").write_text(textwrap.dedent("""
        import jax
        import jax.numpy as jnp
        import pytest

        def test_compiles():
            assert float(jax.jit(lambda x: x * 3.0)(jnp.float32(2.0))) == 6.0

        def test_passes():
            pass

        def test_fails():
            assert 1 == 2

        @pytest.mark.skip(reason="on purpose")
        def test_skipped():
            pass
    """))
    out = tmp_path / "profile"
    done = _run_pytest(tmp_path, "--suite-profile-out", str(out), "test_mixed.py")
    assert done.returncode == 1
    record = json.loads((out / "suite_profile.json").read_text())
    assert record["exit_status"] == 1 and record["processes"] == 1
    assert record["outcomes"] == {"passed": 2, "failed": 1, "skipped": 1}
    assert "1 failed, 2 passed, 1 skipped; pytest exit status 1" in (out / "suite_profile.md").read_text()
    mixed = record["files"]["test_mixed.py"]
    assert mixed["tests"] == 4 and mixed["backend_compiles"] >= 1 and mixed["backend"] > 0.0
