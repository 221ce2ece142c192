"""verify.suite: the suite type, the registry, derived seeds, and the layout of verify/."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pathlib

import pytest

from verify import suite as suite_module
from verify.suite import Suite, cell_identity, derived_seed, register, suites, with_seeds

VERIFY = pathlib.Path(__file__).resolve().parents[1] / "verify"
PRESETS = ("quick", "paper", "large")
EXPECTED = {"identities", "lemma42", "theorem43", "theorem51", "theorem61", "adversarial",
            "strategies", "sharp_laws", "real_attention"}


def _seeded_cells(preset: str):
    for s in suites().values():
        if s.seeded:
            for cell in s.cells(preset, None):
                yield s, cell


def test_every_suite_is_registered_in_order_with_the_fields_the_runner_reads():
    registry = suites()
    assert set(registry) == EXPECTED
    orders = [s.order for s in registry.values()]
    assert orders == sorted(orders)
    for name, s in registry.items():
        assert isinstance(s, Suite) and s.name == name and s.summary
        assert set(PRESETS) <= set(s.presets), name
        assert all(callable(f) for f in (s.cells, s.cell_id, s.run_cell, s.summarise, s.figures,
                                         s.report_sections))


def test_register_refuses_a_second_suite_of_the_same_name():
    lemma42 = suites()["lemma42"]
    assert register(lemma42) is lemma42  # the same suite again is harmless
    with pytest.raises(ValueError, match="two suites are named 'lemma42'"):
        register(Suite(**{**lemma42.__dict__, "summary": "an impostor"}))


@pytest.mark.parametrize("preset", PRESETS)
def test_no_two_cells_of_a_preset_share_a_stream(preset):
    """Item 2 of issue 15: before, theorem61's row cell 1 and Frobenius cell 0 both
    started from 62000, identities' cell 5 and lemma42's cell 0 from 5000, and
    sharp_laws' first fixed cell and adversarial's deterministic cell from 71000."""
    seen: dict[int, str] = {}
    identities: set[str] = set()
    for s, cell in _seeded_cells(preset):
        identity = f"{s.name}/{cell_identity(cell)}"
        assert identity not in identities, f"two cells of {s.name} are the same experiment: {identity}"
        identities.add(identity)
        base = cell["seed_base"]
        assert base == derived_seed(s.name, cell)
        assert 0 <= base < 2**31
        assert base not in seen, f"{identity} and {seen[base]} share seed_base {base}"
        seen[base] = identity
    assert len(seen) > 10


def test_derived_seeds_are_stable_and_ignore_only_trial_counts():
    cell = {"suite": "x", "model": "gaussian", "n": 64, "seeds": 10}
    base = derived_seed("x", cell)
    # Pinned: sha256 of the suite name and canonical JSON, the same on every machine.
    digest = hashlib.sha256(b'x\n{"model":"gaussian","n":64,"suite":"x"}').digest()
    assert base == int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
    assert derived_seed("x", {**cell, "seeds": 1000}) == base  # more trials: the same stream
    assert derived_seed("x", {**cell, "seed_base": 7}) == base
    assert derived_seed("x", {**cell, "n": 128}) != base
    assert derived_seed("y", cell) != base  # the suite's name is part of the identity
    assert with_seeds("x", [cell]) == [{**cell, "seed_base": base}]


def test_the_move_to_verify_suites_changed_no_cell_but_its_seed():
    """Every cell of every preset equals the cell of the same suite before the move
    (commit 315a051; fingerprints in tests/data), seed_base left out. So a quick
    run's claims and trial counts are those of before; only the draws moved."""
    before = json.loads((pathlib.Path(__file__).parent / "data" / "cells_before_suite_move.json").read_text())
    for name, presets in before["cells"].items():
        s = suites()[name]
        for preset, fingerprints in presets.items():
            now = sorted(hashlib.sha256(json.dumps(
                {k: v for k, v in json.loads(json.dumps(c)).items() if k != "seed_base"},
                sort_keys=True).encode()).hexdigest()[:16] for c in s.cells(preset, None))
            assert now == fingerprints, (name, preset)
    # Every claim the quick run judged then is declared now, in the same order (a
    # claim only the large preset reaches, e.g. stream-agreement, may be extra).
    for name, rows in before["quick_run_claims"].items():
        judged = [claim for claim, _ in rows]
        assert [c for c in suites()[name].claims if c in judged] == judged, name


def _module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(VERIFY.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: pathlib.Path):
    """(module imported, names, at module level?) for each import of verify.*"""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("verify"):
            names = [a.name for a in node.names]
            # "from verify.suites import strategy_analysis" imports a module
            for n in names:
                target = f"{node.module}.{n}"
                path = VERIFY.parent / target.replace(".", "/")
                module = target if path.with_suffix(".py").exists() or path.is_dir() else node.module
                yield module, n, id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("verify"):
                    yield a.name, a.name, id(node) in top


def test_verify_has_no_import_circle_and_no_private_import():
    graph = {}
    for path in VERIFY.rglob("*.py"):
        name = _module_name(path)
        graph[name] = set()
        for module, imported, _ in _imports(path):
            assert not imported.startswith("_"), f"{name} imports the private {module}.{imported}"
            if module != name:
                graph[name].add(module)
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("import circle: " + " -> ".join(trail + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_imports_inside_functions_are_only_the_lazy_entry_points():
    """Imports hidden in functions were how the circles hid; what remains loads
    JAX or a subcommand late on purpose (the command starts fast)."""
    allowed = {("verify.cli", "verify.runner"), ("verify.cli", "verify.workers"), ("verify.cli", "verify.bench"), ("verify.cli", "verify.suite"), ("verify.cli", "verify.report.markdown"), ("verify.cli", "verify.report.results_file"),
               ("verify.cli", "verify.devices"), ("verify.cli", "verify.report.ledger"),
               ("verify.bench.measure", "verify.numpy_reference"), ("verify.bench.command", "verify.provenance")}
    late = {(_module_name(p), m) for p in VERIFY.rglob("*.py") for m, _, top in _imports(p) if not top}
    assert late <= allowed, late - allowed


def test_the_ledger_module_knows_no_claim_and_no_suite():
    source = (VERIFY / "report" / "ledger.py").read_text()
    for word in ("L4.2", "T4.3", "T5.1", "T6.1", "lemma42", "theorem61", "strategies", "sharp_laws",
                 "real_attention", "adversarial"):
        assert word not in source, word


def test_a_new_suite_is_one_module(tmp_path, monkeypatch):
    """A module dropped into verify/suites/ is found, listed and run with no other edit."""
    source = '''"""Suite ``demo``: a fair coin never lands on its edge."""
import numpy as np
from verify.claims import claim_result, summarise_claims
from verify.suite import Suite, register, with_seeds

NAME = "demo"
CLAIMS = {"edge": "P(edge) <= 0.05"}
PRESETS = {p: {"seeds": 20} for p in ("quick", "paper", "large")}

def cells(preset, seeds=None):
    return with_seeds(NAME, [{"suite": NAME, "seeds": seeds or PRESETS[preset]["seeds"]}])

def cell_id(cell):
    return f"s{cell['seeds']}"

def run_cell(cell):
    rng = np.random.default_rng(cell["seed_base"])
    return {"edge": claim_result(np.zeros(cell["seeds"], bool), rng.normal(-3, 0.1, cell["seeds"]), 0.05)}

def summarise(cell_results):
    return summarise_claims(NAME, CLAIMS, cell_results)

SUITE = register(Suite(name=NAME, summary=__doc__.strip(), claims=CLAIMS, presets=PRESETS, cells=cells,
                       cell_id=cell_id, run_cell=run_cell, summarise=summarise))
'''
    import verify.suites

    package_dir = tmp_path / "suites"
    package_dir.mkdir()
    (package_dir / "demo.py").write_text(source)
    monkeypatch.setattr(verify.suites, "__path__", [*verify.suites.__path__, str(package_dir)])
    monkeypatch.setattr(suite_module, "_REGISTRY", dict(suite_module._REGISTRY))
    monkeypatch.delitem(__import__("sys").modules, "verify.suites.demo", raising=False)
    assert "demo" in suites()
    from verify import cli, runner

    monkeypatch.setattr(runner, "SUITES", suites())
    out = tmp_path / "run"
    assert cli.main(["run", "demo", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [(v["claim"], v["verdict"], v["checked"]) for v in results["verdicts"]] == [("edge", "HOLDS", 20)]
    assert os.path.exists(out / "cells" / "demo" / "s20.json")
