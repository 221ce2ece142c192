"""Where the test suite's time goes: a pytest plugin that splits each test file's
time into JAX compilation and the rest.

Run the README's test command with it::

    python -m pytest -q -n auto --dist loadfile tests \\
        -p verify.bench.suite_profile --suite-profile-out DIR

Each test process listens to JAX's own duration events
(``jax.monitoring``): tracing to a jaxpr, lowering to MLIR, and XLA's backend
compilation, and adds each one to the test file that was running. At the end it
writes ``DIR/suite_profile.json`` (per file: seconds in tests, in each compile
stage, number of backend compilations; totals; provenance) and
``DIR/suite_profile.md`` (the same as a table; docs/suite_profile.md is one),
and prints the slowest files. Under pytest-xdist each worker sends its part to
the controller (``workeroutput``), which writes the merged files.

What it does not see: programs compiled by *other* processes that tests start
(the command's worker processes, fresh interpreters). Their time is in the
file's test seconds but not in its compile seconds, so the compile share it
reports is a lower bound.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Optional

import pytest

from verify.bench.machine import machine_info
from verify.compilation_cache import usable
from verify.provenance import provenance

# JAX's event names (jax._src.dispatch / pxla): the three compile stages.
STAGES = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "backend",
}
KEY = "suite_profile"
SCHEMA = "sparsity-suite-profile/1"


def empty_file_record() -> dict:
    # A plain dict, not a typed record: it crosses from the xdist workers to the
    # controller (``workeroutput`` takes only builtins) and goes into the JSON.
    return {"tests": 0, "test_s": 0.0, "backend_compiles": 0, **{s: 0.0 for s in STAGES.values()}}


def compile_seconds(record: dict) -> float:
    return sum(record[s] for s in STAGES.values())


def share_text(record: dict) -> str:
    return f"{compile_seconds(record) / record['test_s']:.0%}" if record["test_s"] else "-"


class Recorder:
    """Per test file: seconds in setup/call/teardown, and in each compile stage."""

    def __init__(self) -> None:
        self.files: dict = collections.defaultdict(empty_file_record)
        self.current: str = "<outside tests>"

    def on_duration(self, event: str, duration: float, **_) -> None:
        stage = STAGES.get(event)
        if stage is None:
            return
        record = self.files[self.current]
        record[stage] += float(duration)
        if stage == "backend":
            record["backend_compiles"] += 1

    def add_test(self, path: str, seconds: float) -> None:
        record = self.files[path]
        record["tests"] += 1
        record["test_s"] += seconds


def merge(parts: list) -> dict:
    """Sum per-file records from several processes."""
    files: dict = collections.defaultdict(empty_file_record)
    for part in parts:
        for path, record in part.items():
            for key, value in record.items():
                files[path][key] += value
    return dict(files)


def totals(files: dict) -> dict:
    out = empty_file_record()
    for record in files.values():
        for key, value in record.items():
            out[key] += value
    compile_s = compile_seconds(out)
    out["compile_s"] = compile_s
    # Compile events outside any test (collection, fixtures at import) have no
    # test seconds: the share is over the time tests took.
    out["compile_share_of_test_time"] = compile_s / out["test_s"] if out["test_s"] else None
    return out


def _slowest_first(files: dict) -> list:
    return sorted(files.items(), key=lambda item: -item[1]["test_s"])


def summary_lines(files: dict, top: int = 15) -> list:
    rows = _slowest_first(files)
    lines = [f"{'test s':>8} {'compile s':>9} {'share':>6} {'compiles':>8}  file"]
    for path, r in rows[:top]:
        lines.append(f"{r['test_s']:8.1f} {compile_seconds(r):9.1f} {share_text(r):>6} "
                     f"{r['backend_compiles']:8d}  {path}")
    t = totals(files)
    share = t["compile_share_of_test_time"]
    lines.append(
        f"all {len(files)} files: {t['test_s']:.0f} s in tests (summed over processes), "
        f"{t['compile_s']:.0f} s compiling in them "
        f"(backend {t['backend']:.0f}, lowering {t['lower']:.0f}, tracing {t['trace']:.0f}; "
        f"{t['backend_compiles']} backend compilations)"
        + (f" = {share:.0%}" if share is not None else ""))
    return lines


def _outcome_text(outcomes: Optional[dict]) -> str:
    if not outcomes:
        return "not recorded"
    return ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))


def render_markdown(record: dict, top: int = 30) -> str:
    """``suite_profile.md``: provenance, totals and the ``top`` slowest files."""
    prov, mach, t = record["provenance"], record["machine"], record["totals"]
    files = record["files"]
    rows = _slowest_first(files)
    table = ["| test file | tests | test s | compile s | backend s | lowering s | tracing s "
             "| backend compilations | compile share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for path, r in rows[:top]:
        table.append(f"| `{path}` | {r['tests']} | {r['test_s']:.1f} | {compile_seconds(r):.1f} | "
                     f"{r['backend']:.1f} | {r['lower']:.1f} | {r['trace']:.1f} | "
                     f"{r['backend_compiles']} | {share_text(r)} |")
    share = t["compile_share_of_test_time"]
    return "\n".join([
        "# Where the test suite's time goes",
        "",
        "Generated by the pytest plugin `verify.bench.suite_profile` "
        "(`-p verify.bench.suite_profile --suite-profile-out DIR`); do not edit by hand.",
        "",
        f"- Command: `{prov['command']}`",
        f"- Commit: `{prov['git_commit']}`; written at {prov['time_utc']}",
        f"- Machine: {mach['platform']}; CPU {mach['cpu_model']}, {mach['cpu_count']} cores "
        f"({mach['cpus_usable']} usable); {mach['backend']}; jax {mach['jax']}",
        f"- Wall time {record['wall_s']:.0f} s in {record['processes']} test process(es)",
        f"- Outcomes: {_outcome_text(record.get('outcomes'))}; pytest exit status "
        f"{record.get('exit_status', 'not recorded')}",
        "",
        f"Over all {len(files)} files, tests took {t['test_s']:.0f} s (summed over the test "
        f"processes). {t['compile_s']:.0f} s of it was JAX compiling in those processes: "
        f"{t['backend']:.0f} s in XLA's backend ({t['backend_compiles']} compilations), "
        f"{t['lower']:.0f} s lowering to MLIR and {t['trace']:.0f} s tracing"
        + (f", {share:.0%} of the test time." if share is not None else "."),
        "",
        "Programs compiled by processes that tests start (the command's workers, fresh "
        "interpreters) are in a file's test seconds but not in its compile seconds, so "
        "each share is a lower bound.",
        "",
        f"The {min(top, len(rows))} slowest files:",
        "",
        *table,
        "",
    ])


def pytest_addoption(parser) -> None:
    parser.addoption("--suite-profile-out", default=None, metavar="DIR",
                     help="write suite_profile.json and .md (compile time per test file) into DIR")


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config) -> None:
    out = config.getoption("--suite-profile-out")
    if out is not None and not _is_worker(config):
        # Fail now, not after the whole suite has run.
        why = usable(out)
        if why is not None:
            raise pytest.UsageError(f"--suite-profile-out: {why}")
    config.pluginmanager.register(SuiteProfile(config, out), "suite_profile_session")


class SuiteProfile:
    """The plugin's state in one pytest process (a worker, the controller, or both)."""

    def __init__(self, config, out: Optional[str]) -> None:
        import jax

        self.config, self.out = config, out
        self.recorder = Recorder()
        jax.monitoring.register_event_duration_secs_listener(self.recorder.on_duration)
        self.parts: list = []  # the workers' records, on the controller
        self.outcomes: collections.Counter = collections.Counter()
        self.files: Optional[dict] = None  # merged, at the end, on the controller
        self.started = time.perf_counter()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        path = item.location[0]
        self.recorder.current = path
        start = time.perf_counter()
        yield
        self.recorder.add_test(path, time.perf_counter() - start)
        self.recorder.current = "<outside tests>"

    def pytest_runtest_logreport(self, report) -> None:
        # The controller sees every test's reports (under xdist too). A test counts
        # once: by its call, or by the setup or teardown that failed or skipped it.
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.outcome] += 1

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        part = getattr(node, "workeroutput", {}).get(KEY)
        if part is not None:
            self.parts.append(part)

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if _is_worker(self.config):
            self.config.workeroutput[KEY] = dict(self.recorder.files)
            return
        # Under xdist the controller runs no tests: its own record is (nearly) empty.
        self.files = merge(self.parts + [dict(self.recorder.files)])
        if self.out is None:
            return
        record = {
            "schema": SCHEMA,
            "exit_status": int(exitstatus),
            "outcomes": dict(self.outcomes),
            "wall_s": time.perf_counter() - self.started,
            "processes": len(self.parts) or 1,
            "totals": totals(self.files),
            "files": self.files,
            "machine": machine_info(),
            "provenance": provenance(),
        }
        for name, text in (("suite_profile.json", json.dumps(record, indent=1, sort_keys=True)),
                           ("suite_profile.md", render_markdown(record))):
            path = os.path.join(self.out, name)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        if not self.files:
            return
        terminalreporter.section("suite profile: JAX compilation per test file")
        for line in summary_lines(self.files):
            terminalreporter.write_line(line)
        if self.out is not None:
            terminalreporter.write_line(
                f"written: {os.path.join(self.out, 'suite_profile.json')} and .md")
