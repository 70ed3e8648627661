"""Load a user's objective, model or dataset from outside the package.

A config names one of three things in its `name`:

- a built-in (`geco`): looked up by the caller in its own table;
- an import path, `package.module:Attribute` (`mypkg.objectives:CapacityVae`): the module is
  imported and the attribute read (dots after the colon walk nested attributes);
- a short name an installed package registers as an entry point in the group
  `vaestudy.<kind>` (`vaestudy.objectives`), e.g. in its `pyproject.toml`:

      [project.entry-points."vaestudy.objectives"]
      capacity_vae = "mypkg.objectives:CapacityVae"

Whatever fails (no such module, no such attribute, no such entry point, the module's own
import error) is a `PluginError` whose message names the path and what was expected. Standard
library only: loading a built-in config imports nothing.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

GROUP = "vaestudy.{kind}"


class PluginError(ValueError):
    """A plugin that cannot be found or imported (the message says which and why)."""


def is_plugin_name(name: str) -> bool:
    """Whether `name` is an import path (`pkg.mod:Attr`) rather than a short name."""
    return ":" in name


def registered(kind: str) -> dict[str, str]:
    """The short names installed packages register for `kind` and their import paths."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP.format(kind=kind))}


def load(kind: str, name: str, builtins: list[str]) -> Any:
    """The object `name` refers to: an import path, or a short name registered in the entry-point
    group `vaestudy.<kind>`. `builtins` (the caller's own names) only word the error."""
    if not is_plugin_name(name):
        path = registered(kind).get(name)
        if path is None and "." in name:
            raise PluginError(
                f"{name!r}: no installed package registers this name; an import path names "
                "its attribute after a colon: 'package.module:Class'"
            )
        if path is None:
            raise PluginError(
                f"unknown {kind[:-1]} {name!r}: expected one of {', '.join(builtins)}, a name an "
                f"installed package registers in the entry-point group "
                f"{GROUP.format(kind=kind)!r}, or an import path 'package.module:Class'"
            )
        return import_path(path, f"{name!r} (entry point {path!r})")
    return import_path(name)


def config_class(kind: str, name: str, builtins: dict[str, type], base: type) -> type:
    """The config class of the `kind` named `name`: `builtins[name]`, or the `config` attribute
    of the plugin `name` refers to, which must subclass `base`."""
    if name in builtins:
        return builtins[name]
    plugin = load(kind, name, list(builtins))
    config = getattr(plugin, "config", None)
    if not (isinstance(config, type) and issubclass(config, base)):
        raise PluginError(
            f"{name!r}: expected a {kind[:-1]} whose attribute `config` is a subclass of "
            f"{base.__module__}.{base.__qualname__}"
        )
    return config


def import_path(path: str, what: str | None = None) -> Any:
    """The object `package.module:Attribute` names (`what` words the errors; default: the
    path)."""
    what = what or repr(path)
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise PluginError(f"{what}: expected an import path 'package.module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"{what}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # the plugin's own import-time failure, shown with its cause
        raise PluginError(
            f"{what}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what}: module {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj
