"""The suite type, the registry of suites, and the seeds of their cells.

A suite checks some claims of the paper over a grid of *cells* (one model,
mode, length, ... each; a cell is a JSON-ready dict). It is one module in
``verify/suites/`` that ends with::

    SUITE = register(Suite(name=NAME, summary=..., claims=CLAIMS, presets=PRESETS,
                           cells=cells, cell_id=cell_id, run_cell=run_cell,
                           summarise=summarise))

and a test in ``tests/``. The runner, the command (``list``, ``run``) and the
claims ledger read the registry; nothing else has to change for a new suite
(``verify/suites/__init__.py`` finds every module of the package).

Seeds: a suite's ``cells`` passes its cells through :func:`with_seeds`, which
gives each one ``seed_base``, a 31-bit integer derived from the suite's name and
the cell's identity (every field but the trial counts and the seed itself). The
cell's random streams are ``jax.random.PRNGKey(seed_base)`` and keys folded in
from it, so no two cells share a stream unless they are the same experiment
(tests/test_suite.py checks every preset), and a seed never depends on a
cell's position in a grid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pkgutil
from typing import Any, Callable, Mapping, Optional, Sequence

from verify.claims import ClaimVerdict

Cell = dict[str, Any]  # JSON-ready: a cell must equal its JSON round trip for a run to resume
CellResults = list[tuple[Cell, dict[str, Any]]]

# Fields of a cell that are not part of its identity: the trial counts (more
# seeds extend the same experiment) and the seed itself.
NOT_IDENTITY = ("seed_base", "seeds", "recheck_seeds")


class SuiteUnavailable(RuntimeError):
    """Raised by a suite's ``cells`` when it cannot run on this machine (no model
    file, no network, text too short): the run goes on without it, and the
    report and the ledger mark the suite NOT RUN with the reason."""


def _no_figures(cell_results: CellResults, out_dir: str) -> list[dict]:
    return []


def _no_sections(analysis: dict) -> str:
    return ""


@dataclasses.dataclass(frozen=True)
class Suite:
    """One suite: what it checks, its grids, and how to run and judge a cell.

    Required:
      name: the suite's name on the command line and in results.json.
      summary: one line for ``sparsity-verify list``.
      claims: claim id -> statement checked, for the claims judged per trial by
        ``summarise`` (empty for suites judged only in their analysis).
      presets: preset name (``quick``, ``paper``, ``large``) -> its grid.
      cells: ``(preset, seeds override or None) -> cells``; may raise
        :class:`SuiteUnavailable`.
      cell_id: a cell's file-safe name (its saved result is
        ``DIR/cells/<name>/<cell_id>.json``).
      run_cell: ``cell -> result`` (JSON-ready).
      summarise: ``[(cell, result)] -> [ClaimVerdict]`` (``verify.claims``: one
        row per claim of ``claims``).

    Optional (empty by default):
      seeded: whether its cells draw random numbers: every cell then carries
        ``seed_base`` (``with_seeds``); False for a suite of fixed data.
      order: sort key of the suite in lists, reports and the ledger (the paper's
        section it checks first; 0 for the definitions).
      analysis: ``[(cell, result)] -> dict`` (JSON-ready), for suites whose
        claims are judged from the grid as a whole.
      report_sections: ``analysis -> Markdown`` for report.md.
      figures: ``([(cell, result)], out_dir) -> [{"path", "caption"}]``; called
        in the runner's figure thread once the suite's cells are in (only
        reads them and writes under ``out_dir``).
      ledger_entries: ``results -> ledger rows`` (``verify.report.ledger``):
        the suite's rows of the claims ledger, NOT RUN rows included.
      configure: options of the command the suite takes (``--model``,
        ``--text``), called before ``cells``.
    """

    name: str
    summary: str
    claims: Mapping[str, str]
    presets: Mapping[str, Mapping[str, Any]]
    cells: Callable[[str, Optional[int]], list[Cell]]
    cell_id: Callable[[Cell], str]
    run_cell: Callable[[Cell], dict[str, Any]]
    summarise: Callable[[CellResults], list[ClaimVerdict]]
    seeded: bool = True
    order: float = 100.0
    analysis: Optional[Callable[[CellResults], dict]] = None
    report_sections: Callable[[dict], str] = _no_sections
    figures: Callable[[CellResults, str], list[dict]] = _no_figures
    ledger_entries: Optional[Callable[[dict], list[dict]]] = None
    configure: Optional[Callable[..., None]] = None


_REGISTRY: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    """Add ``suite`` to the registry (once per name) and return it."""
    known = _REGISTRY.get(suite.name)
    if known is not None and known is not suite:
        raise ValueError(f"two suites are named {suite.name!r}")
    _REGISTRY[suite.name] = suite
    return suite


def suites() -> dict[str, Suite]:
    """Every suite of ``verify/suites/``, in their ``order`` (then name)."""
    package = importlib.import_module("verify.suites")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"verify.suites.{module.name}")
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def cell_identity(cell: Mapping[str, Any]) -> str:
    """The canonical JSON of the fields that make a cell the experiment it is."""
    return json.dumps({k: v for k, v in cell.items() if k not in NOT_IDENTITY},
                      sort_keys=True, separators=(",", ":"))


def derived_seed(suite: str, cell: Mapping[str, Any]) -> int:
    """A 31-bit seed from SHA-256 of the suite name and the cell's identity:
    the same on every machine, Python and NumPy version (unlike ``hash``)."""
    digest = hashlib.sha256(f"{suite}\n{cell_identity(cell)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def with_seeds(suite: str, cells: Sequence[Cell]) -> list[Cell]:
    """``cells`` with ``seed_base`` set to :func:`derived_seed` of each."""
    return [{**cell, "seed_base": derived_seed(suite, cell)} for cell in cells]


__all__ = ["Cell", "CellResults", "Suite", "SuiteUnavailable", "cell_identity", "derived_seed",
           "register", "suites", "with_seeds"]
