"""The plugin manager: finds plugins, asks them for blocks, never crashes on a bad one.

Load order: entry points of the ``docpipe`` group (the built-in blocks under
``plugins/`` are installed distributions and arrive this way, exactly like a
third party's), then modules or files given with ``--plugin`` / ``extra``.

Environment:

* ``DOCPIPE_DISABLE_PLUGINS`` — comma-separated entry-point names not to load;
  ``*`` (or ``1``) disables entry-point autoloading altogether.
* ``DOCPIPE_LOAD_PLUGINS`` — when set, load only these entry-point names.

A plugin that fails to import, or whose ``register_blocks`` raises, or that
registers an invalid block, is kept as a :class:`BrokenPlugin` with its error.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from docpipe import hookspecs
from docpipe.blocks import Block, type_name
from docpipe.errors import PluginLoadError, UnknownBlock
from docpipe.models import ModelInfo


@dataclass(frozen=True)
class BlockInfo:
    cls: type[Block]
    plugin: str
    dist: str | None
    dist_version: str | None

    @property
    def name(self) -> str:
        return self.cls.manifest.name

    @property
    def origin(self) -> str:
        """``docpipe-pdf 0.1.0`` — the distribution that ships the block."""
        if self.dist is None:
            return f"{self.plugin} (not installed as a distribution)"
        return f"{self.dist} {self.dist_version}"

    def describe(self) -> dict[str, Any]:
        """The block's manifest and params schema as JSON-able data (``docpipe blocks --json``,
        the server's block listing)."""
        m = self.cls.manifest
        return {
            "name": m.name, "version": m.version, "plugin": self.plugin,
            "distribution": self.dist, "distribution_version": self.dist_version,
            "reads": {k: type_name(v) for k, v in m.reads.items()},
            "writes": {k: type_name(v) for k, v in m.writes.items()},
            "runtime": m.runtime, "device": m.device, "batch": m.batch,
            "params": self.cls.params_schema(),
            "description": m.description or (self.cls.__doc__ or "").strip(),
        }


@dataclass(frozen=True)
class BrokenPlugin:
    plugin: str
    dist: str | None
    error: str
    traceback: str


def _env_names(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def _load_path(spec: str) -> ModuleType:
    """Import ``spec``: a path to a ``.py`` file or a dotted module name.

    A file's folder is put on ``sys.path`` and the file imported by its stem, so
    spawned worker processes (which inherit ``sys.path``) import it the same way.
    """
    if spec.endswith(".py"):
        path = Path(spec).resolve()
        if not path.is_file():
            raise PluginLoadError(f"plugin file {spec} does not exist")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        return importlib.import_module(path.stem)
    return importlib.import_module(spec)


class Registry:
    """Discovered plugins and their blocks. Cheap to build; build one per process."""

    def __init__(self, *, entry_points: bool = True, extra: Iterable[str | object] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.blocks: dict[str, BlockInfo] = {}
        self.broken: list[BrokenPlugin] = []
        self._dists: dict[str, tuple[str | None, str | None]] = {}
        if entry_points:
            self._load_entry_points()
        for item in extra:
            self.add(item)

    # --- loading -----------------------------------------------------------------
    def _load_entry_points(self) -> None:
        disabled = _env_names("DOCPIPE_DISABLE_PLUGINS") or set()
        if disabled & {"*", "1", "all"}:
            return
        only = _env_names("DOCPIPE_LOAD_PLUGINS")
        for ep in sorted(md.entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            if ep.name in disabled or (only is not None and ep.name not in only):
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin must never take the CLI down
                self._broken(ep.name, dist, exc)
                continue
            self._register(ep.name, plugin, dist, version)

    def add(self, plugin: str | object, name: str | None = None) -> None:
        """Add a plugin: a module object, an object with hookimpls, a module name or a ``.py`` path."""
        if isinstance(plugin, str):
            label = name or plugin
            try:
                plugin = _load_path(plugin)
            except BaseException as exc:  # noqa: BLE001
                self._broken(label, None, exc)
                return
        label = name or getattr(plugin, "__name__", None) or repr(plugin)
        self._register(label, plugin, None, None)

    def _broken(self, name: str, dist: str | None, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(exc))
        self.broken.append(BrokenPlugin(name, dist, f"{type(exc).__name__}: {exc}", tb))

    def _register(self, name: str, plugin: object, dist: str | None, version: str | None) -> None:
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()  # a hookimpl that matches no hook: a typo like register_block
        except BaseException as exc:  # noqa: BLE001 - a bad signature, an unknown hook
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._broken(name, dist, exc)
            return
        self._dists[name] = (dist, version)
        for impl in self.pm.hook.register_blocks.get_hookimpls():
            if impl.plugin_name != name:
                continue
            collected: list[type[Block]] = []
            try:
                impl.function(register=collected.append)
            except BaseException as exc:  # noqa: BLE001
                self._broken(name, dist, exc)
                continue
            for cls in collected:
                self._add_block(name, cls, dist, version)

    def _add_block(self, plugin: str, cls: Any, dist: str | None, version: str | None) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Block)):
            err = PluginLoadError(f"register() got {cls!r}, which is not a docpipe.Block subclass")
            self._broken(plugin, dist, err)
            return
        manifest = getattr(cls, "manifest", None)
        problems = manifest.problems() if manifest is not None else ["it has no manifest"]
        if manifest is None or problems:
            err = PluginLoadError(f"block {cls.__qualname__}: " + "; ".join(problems))
            self._broken(plugin, dist, err)
            return
        existing = self.blocks.get(manifest.name)
        if existing is not None and existing.cls is not cls:
            err = PluginLoadError(
                f"block name '{manifest.name}' is already registered by {existing.origin}"
            )
            self._broken(plugin, dist, err)
            return
        self.blocks[manifest.name] = BlockInfo(cls, plugin, dist, version)

    # --- lookup --------------------------------------------------------------------
    def get(self, name: str) -> BlockInfo:
        try:
            return self.blocks[name]
        except KeyError:
            known = ", ".join(sorted(self.blocks)) or "none"
            raise UnknownBlock(
                f"no installed plugin provides block '{name}' (installed blocks: {known})"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.blocks

    def extensions(self, hook: str, base: type) -> tuple[dict[str, tuple[type, str]], list[BrokenPlugin]]:
        """What plugins register through ``hook`` (``register_sinks``, ``register_sources``):
        subclasses of ``base`` by their ``kind``, each with its plugin's name, and the plugins
        whose hook failed or registered something else. Called on demand (a server starts)."""
        found: dict[str, tuple[type, str]] = {}
        broken: list[BrokenPlugin] = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            dist = self._dists.get(impl.plugin_name, (None,))[0]
            collected: list[Any] = []
            try:
                impl.function(register=collected.append)
            except BaseException as exc:  # noqa: BLE001 - one plugin must not hide the others
                broken.append(BrokenPlugin(impl.plugin_name, dist, f"{type(exc).__name__}: {exc}",
                                           "".join(traceback.format_exception(exc))))
                continue
            for cls in collected:
                kind = str(getattr(cls, "kind", "") or "")
                problem = (f"{hook}: register() got {cls!r}, which is not a {base.__module__}.{base.__qualname__}"
                           " subclass" if not (isinstance(cls, type) and issubclass(cls, base)) else
                           f"{hook}: {cls.__qualname__} has no kind" if not kind else
                           f"{hook}: kind '{kind}' is already registered by {found[kind][1]}" if kind in found
                           and found[kind][0] is not cls else None)
                if problem is not None:
                    broken.append(BrokenPlugin(impl.plugin_name, dist, problem, ""))
                else:
                    found[kind] = (cls, impl.plugin_name)
        return found, broken

    def models(self) -> tuple[list[ModelInfo], list[BrokenPlugin]]:
        """The models plugins register (``register_models``), and the plugins whose hook
        failed. Called on demand: describing models reads folders on disk."""
        found: list[ModelInfo] = []
        broken: list[BrokenPlugin] = []
        for impl in self.pm.hook.register_models.get_hookimpls():
            collected: list[Any] = []
            try:
                impl.function(register=collected.append)
            except BaseException as exc:  # noqa: BLE001 - one plugin must not hide the others
                broken.append(BrokenPlugin(impl.plugin_name, self._dists.get(impl.plugin_name, (None,))[0],
                                           f"{type(exc).__name__}: {exc}",
                                           "".join(traceback.format_exception(exc))))
                continue
            for m in collected:
                if isinstance(m, ModelInfo):
                    found.append(m)
                else:
                    broken.append(BrokenPlugin(impl.plugin_name, None,
                                               f"register() got {m!r}, which is not a docpipe.models.ModelInfo", ""))
        return found, broken


def registry(extra: Iterable[str | object] = ()) -> Registry:
    """The registry of installed plugins plus ``extra`` (``--plugin`` paths or modules)."""
    return Registry(extra=extra)
