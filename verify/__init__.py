"""Verification suites and the ``sparsity-verify`` command."""
