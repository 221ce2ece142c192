"""The one way a suite says it cannot run here (no model file, no network, text
too short): the run goes on without it, and the report and ledger mark the
suite NOT RUN with the reason."""


class SuiteUnavailable(RuntimeError):
    """Raised by a suite's ``cells`` when it cannot run on this machine."""
