"""The run engine: threads, runs and the tool-calling loop.

``Engine`` starts a run as a task of the server, streams its events into a
``RunLog`` any number of readers follow, persists messages and run records in
the ``ThreadStore``, and replays finished runs. Modules: ``core`` (the
engine), ``run`` (one run's loop), ``runlog`` (the log and the result),
``history`` (repairing and trimming what the model sees). Depends on the
provider, executor and store interfaces; ``gateway.api`` builds on it.
"""

from __future__ import annotations

from gateway.engine.core import Engine
from gateway.engine.history import repair, trim_history
from gateway.engine.runlog import RunHandle, RunLog, RunResult, collect_result
from gateway.engine.spec import HistoryBudget, ProviderLookup

__all__ = [
    "Engine",
    "HistoryBudget",
    "ProviderLookup",
    "RunHandle",
    "RunLog",
    "RunResult",
    "collect_result",
    "repair",
    "trim_history",
]
