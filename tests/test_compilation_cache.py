"""verify.compilation_cache: where ``sparsity-verify run`` keeps JAX's compiled
programs, that a run with a warm cache (in worker processes too) computes the
results of a cold one, and that a cache that cannot be used is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from verify import cli, compilation_cache

ENV = compilation_cache.ENVIRONMENT


def test_option_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSITY_THEORY_CACHE", str(tmp_path / "pkg"))
    monkeypatch.delenv(ENV, raising=False)
    assert compilation_cache.requested_dir(None) == (str(tmp_path / "pkg" / "jax-compilation-cache"),
                                                     False)
    monkeypatch.setenv(ENV, str(tmp_path / "env"))
    assert compilation_cache.requested_dir(None) == (str(tmp_path / "env"), True)
    assert compilation_cache.requested_dir(str(tmp_path / "opt")) == (str(tmp_path / "opt"), True)
    assert compilation_cache.requested_dir("OFF") == (None, True)
    monkeypatch.setenv(ENV, "off")
    assert compilation_cache.choose(None) == (None, None)


def test_an_unusable_directory(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # Asked for: an error (one line); the default: a warning, and no cache.
    with pytest.raises(ValueError, match="^compilation cache: cannot create .*a-file/cache") as e:
        compilation_cache.choose(str(blocker / "cache"))
    assert "\n" not in str(e.value)
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("SPARSITY_THEORY_CACHE", str(blocker))
    directory, warning = compilation_cache.choose(None)
    assert directory is None and warning.startswith("running without a compilation cache: cannot create")


def test_the_command_refuses_an_unusable_cache_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = cli.main(["run", "lemma42", "--out", str(tmp_path / "out"), "--no-progress",
                     "--compilation-cache", str(blocker / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: compilation cache: cannot create")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before anything ran


def _run(out, cache, jobs):
    env = {**os.environ, "SPARSITY_VERIFY_JOBS": str(jobs)}
    env.pop(ENV, None)
    done = subprocess.run(
        [sys.executable, "-m", "verify.cli", "run", "lemma42", "--seeds", "2", "--no-progress",
         "--out", str(out), "--compilation-cache", str(cache)],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "results.json").read_text())


def test_worker_processes_fill_the_cache_and_a_warm_run_gives_the_same_results(tmp_path):
    cache = tmp_path / "cache"
    cold = _run(tmp_path / "cold", cache, jobs=2)
    assert cold["jobs"] == 2
    # The workers compile every cell's programs (the parent none: without the
    # cache in the workers this directory stays empty), small ones included.
    assert len(os.listdir(cache)) > 10
    warm = _run(tmp_path / "warm", cache, jobs=1)
    assert warm["cells"] == cold["cells"] and warm["verdicts"] == cold["verdicts"]
    for run in (cold, warm):
        assert run["provenance"]["compilation_cache"] == str(cache)
