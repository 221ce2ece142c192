"""tests/mutation_catalogue.py: every mutant still applies to the code.

A mutant whose source text is gone (the code was rewritten) can no longer be
run, and its row in docs/mutation_catalogue.md would report a kill of code that
no longer exists: this is checked here, cheaply, on every test run.
"""

from __future__ import annotations

import os

import pytest

import mutation_catalogue as catalogue


@pytest.mark.parametrize("mutant", catalogue.MUTANTS, ids=lambda m: m.id)
def test_every_mutant_changes_one_exact_place(mutant):
    with open(os.path.join(catalogue.REPO, mutant.path)) as f:
        source = f.read()
    assert source.count(mutant.old) == 1, f"{mutant.id}: its text must occur once in {mutant.path}"
    assert mutant.new != mutant.old
    for test in mutant.tests:
        assert os.path.exists(os.path.join(catalogue.REPO, test)), f"{mutant.id}: no {test}"


def test_mutant_ids_are_unique():
    ids = [m.id for m in catalogue.MUTANTS]
    assert len(ids) == len(set(ids))
