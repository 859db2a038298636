"""``python -m docpipe.cli``: the ``docpipe`` command."""

from docpipe.cli import entrypoint

entrypoint()
