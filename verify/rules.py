"""Verdict rules, declared before the data: every threshold, tolerance, level and
grouping a verdict depends on, each with its reason in one line.

A module declares a rule where it uses it, ``ALPHA = rule("shared", "alpha",
1e-6, "why")``; the constant stays a plain value. ``scope`` is the suite whose
verdicts it decides, or ``"shared"`` for the rules every suite's verdicts rest
on (the binomial test's level, the SPRT, the rounding tolerance of exact facts).

Every run records, per suite, its rules and their digest (SHA-256 of the
names and values; rewording a reason changes nothing) in results.json
(:func:`record`). The ledger compares a run's digest with today's rules
(:func:`changed`) and does not judge a suite whose rules changed after its run
unless asked to, and then it says so: a changed rule means a new run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterable, Mapping, Optional

SHARED = "shared"


@dataclasses.dataclass(frozen=True)
class Rule:
    """One verdict rule: where it applies, its name, its value and why."""

    scope: str
    name: str
    value: Any  # JSON-ready: a number, a string or a list of them
    reason: str


_RULES: dict[tuple[str, str], Rule] = {}


def rule(scope: str, name: str, value: Any, reason: str) -> Any:
    """Declare a rule and return its value (to bind to the module's constant)."""
    if not reason.strip() or "\n" in reason:
        raise ValueError(f"rule {scope}.{name} needs its reason in one line")
    json.dumps(value)  # a rule's value must be JSON-ready: it is recorded with the run
    known = _RULES.get((scope, name))
    if known is not None and known.value != value:
        raise ValueError(f"rule {scope}.{name} declared twice with different values")
    _RULES[(scope, name)] = Rule(scope, name, value, reason)
    return value


def rules_for(suite: str) -> dict[str, Rule]:
    """The rules a suite's verdicts depend on: the shared ones and its own,
    keyed ``scope.name``."""
    return {f"{r.scope}.{r.name}": r for (scope, _), r in sorted(_RULES.items())
            if scope in (SHARED, suite)}


def digest(rules: Mapping[str, Any]) -> str:
    """SHA-256 of the rules' names and values (canonical JSON)."""
    values = {name: (r.value if isinstance(r, Rule) else r["value"]) for name, r in rules.items()}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def record(suites: Iterable[str]) -> dict[str, dict]:
    """Per suite, its rules (value and reason) and their digest, for results.json."""
    out = {}
    for suite in suites:
        rules = rules_for(suite)
        out[suite] = {"digest": digest(rules),
                      "rules": {name: {"value": r.value, "reason": r.reason} for name, r in rules.items()}}
    return out


def changed(recorded: Optional[Mapping[str, Any]], suite: str) -> list[str]:
    """The rules of ``suite`` that differ between a run's record and today's code
    (added, removed or with another value); ``["no rules were recorded"]`` for a
    run made before rules were recorded; empty when they agree."""
    if not recorded or "rules" not in recorded:
        return ["no rules were recorded"]
    now = rules_for(suite)
    then = recorded["rules"]
    if digest(then) == digest(now):
        return []
    names = sorted(set(now) | set(then))
    return [n for n in names if n not in now or n not in then or now[n].value != then[n]["value"]]


def all_rules() -> list[Rule]:
    """Every declared rule (of the modules imported so far)."""
    return [r for _, r in sorted(_RULES.items())]


__all__ = ["Rule", "SHARED", "all_rules", "changed", "digest", "record", "rule", "rules_for"]
