"""Reading a finished run's ``results.json`` for ``report`` and ``ledger``: a
file that is missing, unreadable, not JSON or not of a run's shape is refused
with one line naming the file and what is wrong, so no report or ledger is ever
written from garbage."""

from __future__ import annotations

import json
import os


class ResultsFileError(ValueError):
    """A run directory without a usable results.json."""


# The top-level fields every consumer reads, and their types.
REQUIRED = {"preset": str, "suites": list, "verdicts": list, "provenance": dict, "cells": dict,
            "analysis": dict, "seconds": (int, float)}
VERDICT_FIELDS = ("suite", "claim", "verdict", "violations", "checked")


def read_results(run_dir: str) -> dict:
    """The results of the run in ``run_dir``, checked for the shape of a run."""
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise ResultsFileError(f"no results.json in {run_dir}")
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        raise ResultsFileError(f"{path} is not a readable run ({type(e).__name__}: {e})") from None
    problem = shape_problem(results)
    if problem:
        raise ResultsFileError(f"{path} does not have the shape of a run: {problem}")
    return results


def shape_problem(results) -> str:
    """What keeps ``results`` from being a run's results ("" if nothing)."""
    if not isinstance(results, dict):
        return f"a JSON {type(results).__name__}, not an object"
    for key, kind in REQUIRED.items():
        if key not in results:
            return f"no field {key!r}"
        if not isinstance(results[key], kind):
            return f"field {key!r} is a {type(results[key]).__name__}"
    if not all(isinstance(s, str) for s in results["suites"]):
        return "field 'suites' is not a list of names"
    for v in results["verdicts"]:
        if not isinstance(v, dict) or any(k not in v for k in VERDICT_FIELDS):
            return f"a verdict row lacks one of {', '.join(VERDICT_FIELDS)}"
        if v["suite"] not in results["suites"]:
            return f"a verdict row of suite {v['suite']!r}, which the run does not list"
    return ""


__all__ = ["ResultsFileError", "read_results", "shape_problem"]
