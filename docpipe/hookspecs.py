"""The whole plugin contract of docpipe, as pluggy hook specifications.

A plugin is a module (or object) with functions decorated ``@docpipe.hookimpl``
named after the hooks below, published under the ``docpipe`` entry-point group::

    [project.entry-points.docpipe]
    foo = "docpipe_foo"

Hooks are called in the process that runs ``docpipe`` (the CLI, the server or
an engine embedded in a program); worker processes do not load plugins, they
import the block classes they run by their import path. Hook implementations
must be stateless: other instances of a block run at the same time in other
workers.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from docpipe.blocks import Block
from docpipe.models import ModelInfo

PROJECT = "docpipe"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    """Register the blocks this plugin provides.

    Call ``register(BlockClass)`` once per block class. Called once, in the main
    process, when the plugin manager loads plugins. Not ``firstresult``: every
    plugin's implementation is called. A block whose manifest is invalid, or
    whose name another plugin already registered, is reported as a broken
    plugin entry by ``docpipe blocks`` and never crashes the caller.
    """


@hookspec
def register_models(register: Callable[[ModelInfo], None]) -> None:
    """Register the models this plugin's blocks use, for ``docpipe models list``.

    Call ``register(ModelInfo(...))`` per model (``docpipe.models`` has helpers:
    ``describe_folder``, ``scan``, ``package_model``). Register a model the block
    expects but cannot find with ``path=None`` and a ``note`` saying how to get it.
    Called only when models are listed, never at block load time; must not load
    the models, only describe them.
    """


@hookspec
def register_sinks(register: Callable[[type], None]) -> None:
    """Register the output sinks this plugin provides (``docpipe.sinks.Sink`` subclasses).

    Call ``register(SinkClass)`` once per class; its ``kind`` names it in ``docpipe serve
    --sink NAME=KIND:...`` and in a server's config file. Called when a server starts, in the
    server's process; a sink that raises here is reported as a broken plugin.
    """


@hookspec
def register_sources(register: Callable[[type], None]) -> None:
    """Register the intake sources this plugin provides (``docpipe.sources.Source`` subclasses).

    Call ``register(SourceClass)`` once per class; its ``kind`` names it in a server's config
    file. Called when a server starts, in the server's process; a source that raises here is
    reported as a broken plugin.
    """
