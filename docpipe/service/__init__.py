"""What a user can do with docpipe, whichever face they use: plan a flow, find the
documents an input spec names, start, resume or retry a batch, find a previous batch,
query the recorded runs, list, claim and answer review tasks and continue answered runs.

Plain Python: typed values in (:class:`RunOptions`, :class:`Batch`, :class:`RunQuery`),
typed values out, :class:`~docpipe.errors.DocpipeError` subclasses raised (those of
:mod:`docpipe.service.errors`, :class:`~docpipe.errors.FlowError`,
:class:`~docpipe.inputs.InputError`). The faces (:mod:`docpipe.cli`, :mod:`docpipe.server`)
word the errors and draw the results; this package never imports click, rich or FastAPI,
never prints and never exits (``tests/test_layers.py`` holds it to that).
"""

from __future__ import annotations

from docpipe.service.batches import (
    RESULT_SUFFIXES,
    Batch,
    Outcome,
    RunOptions,
    check_out,
    continue_batch,
    failed_run,
    make_executor,
    run_batch,
)
from docpipe.service.errors import Ambiguous, Conflict, NotFound, SecretsNeeded, ServiceError
from docpipe.service.plans import (
    find_documents,
    plan_batch,
    plan_definition,
    plan_flow,
    previous_batch,
    record_flow,
)
from docpipe.service.review import (
    DEFAULT_LEASE_S,
    Continued,
    ReviewExport,
    answer,
    answer_values,
    claim,
    continue_answered,
    export_reviews,
    get_task,
    list_tasks,
    release,
)
from docpipe.service.runs import (
    RunList,
    RunQuery,
    full_id,
    list_runs,
    output_value,
    own_duration,
    parse_since,
    show_run,
    step_outputs,
)

__all__ = [
    "DEFAULT_LEASE_S", "RESULT_SUFFIXES", "Ambiguous", "Batch", "Conflict", "Continued", "NotFound", "Outcome",
    "ReviewExport", "RunList", "RunOptions", "RunQuery", "SecretsNeeded", "ServiceError", "answer", "answer_values",
    "check_out", "claim", "continue_answered", "continue_batch", "export_reviews", "failed_run", "find_documents",
    "full_id", "get_task",
    "list_runs", "list_tasks", "make_executor", "output_value", "own_duration", "parse_since", "plan_batch",
    "plan_definition", "plan_flow", "previous_batch", "record_flow", "release", "run_batch", "show_run",
    "step_outputs",
]
