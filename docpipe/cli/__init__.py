"""The ``docpipe`` command line: a face over :mod:`docpipe.service`, one module per
command or group (:mod:`~docpipe.cli.run`, :mod:`~docpipe.cli.runs`, :mod:`~docpipe.cli.flows`,
:mod:`~docpipe.cli.blocks`, :mod:`~docpipe.cli.models`, :mod:`~docpipe.cli.review`,
:mod:`~docpipe.cli.serve`), the
options they share in :mod:`~docpipe.cli.options`.

What a command does is the service's; a command parses its options, calls the service,
draws the result with rich and chooses the exit status. Only this package imports click
or rich's console and calls ``sys.exit``; nothing outside it imports it
(``tests/test_layers.py``).

Exit status: 0 all documents succeeded; 1 some document failed; 2 the flow or the
command line is invalid (nothing was run); 3 the inputs hold no file (an empty folder:
nothing was run); 4 no document failed but some wait for a person's review (a review
step: docs/review.md; `docpipe review continue` goes on once they are answered); a
:class:`~docpipe.errors.DocpipeError` exits with its ``exit_code``.
"""

from __future__ import annotations

import sys

import click

from docpipe import __version__
from docpipe.cli.blocks import blocks
from docpipe.cli.flows import flows, schema, validate
from docpipe.cli.models import models
from docpipe.cli.options import err
from docpipe.cli.review import review
from docpipe.cli.run import resume, run
from docpipe.cli.runs import metrics, runs
from docpipe.cli.serve import serve
from docpipe.errors import DocpipeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="docpipe")
def main() -> None:
    """docpipe: run document-processing flows made of plugin blocks."""


for _command in (run, resume, validate, schema, blocks, runs, flows, metrics, serve, models, review):
    main.add_command(_command)


def entrypoint() -> None:
    """``docpipe`` (``[project.scripts]``): a :class:`~docpipe.errors.DocpipeError` that no
    command words itself is one ``error:`` line and its exit status, not a traceback."""
    try:
        main()
    except DocpipeError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
