"""The suites: one module each, registered with ``verify.suite.register``.

Every module of this package is imported by ``verify.suite.suites()``; those
that end with ``SUITE = register(Suite(...))`` are suites. A suite's module
holds its claims, presets, cells and per-cell computation; a suite judged from
its grid as a whole keeps that analysis (its rules, tables, figures and ledger
rows) in a second module, ``<name>_analysis`` or ``<topic>_analysis``, which
never imports the suite (``strategies`` -> ``strategy_analysis``,
``sharp_laws`` -> ``sharp_analysis``, ``real_attention`` -> ``real_analysis``,
``adversarial`` -> ``adversarial_search`` and ``adversarial_analysis``).

To add a theorem: copy ``lemma42.py`` (the smallest per-trial suite), change
its claims, presets, ``cells`` and ``run_cell``, give it an ``order`` and
ledger rows, and add ``tests/test_<name>.py``.
"""
