"""What a user can do with docpipe, whichever face they use: plan a flow, find the
documents an input spec names, start, resume or retry a batch, find a previous batch,
query the recorded runs.

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
    "RESULT_SUFFIXES", "Ambiguous", "Batch", "Conflict", "NotFound", "Outcome", "RunList", "RunOptions",
    "RunQuery", "SecretsNeeded", "ServiceError", "check_out", "continue_batch", "failed_run",
    "find_documents", "full_id", "list_runs", "make_executor", "output_value", "own_duration",
    "parse_since", "plan_batch", "plan_definition", "plan_flow", "previous_batch", "record_flow",
    "run_batch", "show_run", "step_outputs",
]
