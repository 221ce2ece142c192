"""Real English text present on every machine, and its cutting into chunks.

The default text is Python's own documentation topics (``pydoc_data.topics``:
about 465 KB of English prose and examples, shipped with CPython), joined in a
fixed order so that every machine tokenizes the same sequence. ``--text FILE``
gives a user's own text instead.
"""

from __future__ import annotations

import hashlib
import platform
from typing import NamedTuple

import numpy as np


class Text(NamedTuple):
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def default_text() -> Text:
    from pydoc_data import topics

    body = "\n\n".join(topics.topics[k].strip() for k in sorted(topics.topics))
    return Text(f"pydoc_data.topics (Python {platform.python_version()})", body)


def read_text(path: str) -> Text:
    """A user's text file (UTF-8); a clear error when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            body = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the text file {path}: {e}") from None
    if not body.strip():
        raise ValueError(f"the text file {path} is empty")
    return Text(path, body)


def token_chunks(token_ids, length: int, count: int, source: str = "the text") -> np.ndarray:
    """``count`` consecutive, non-overlapping chunks of ``length`` tokens, (count, length).

    Chunks never overlap, so chunk-level statistics are computed on different
    text; text too short for them is an error that says how much is needed."""
    ids = np.asarray(token_ids, dtype=np.int64)
    if length < 2 or count < 1:
        raise ValueError(f"need chunks of at least 2 tokens and at least one chunk, got length "
                         f"{length} and count {count}")
    if ids.size < length * count:
        raise ValueError(f"{source} has {ids.size} tokens, fewer than the {count} x {length} = "
                         f"{count * length} needed: pass a longer text or fewer/shorter chunks")
    return ids[:length * count].reshape(count, length)
