"""docpipe: a workflow engine for Intelligent Document Processing."""

from __future__ import annotations

from docpipe.blocks import Block, Manifest, NoParams, State
from docpipe.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["Block", "Manifest", "NoParams", "State", "hookimpl", "__version__"]
