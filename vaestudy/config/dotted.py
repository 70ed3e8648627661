"""Dotted keys: nested configs addressed as `a.b.0`, and metric dicts with key prefixes.

Shared by config validation, the trainers, tracking and the report; imports nothing heavy.
"""

from __future__ import annotations

from typing import Any


def set_dotted(tree: dict[str, Any], key: str, value: Any, *, create: bool = True) -> None:
    """Set `tree[a][b][0]...` from `key="a.b.0"`; list elements are addressed by index."""
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(f"{'.'.join(parts[: i + 1])}: no list element {part}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if part not in node:
                    if not create:
                        raise KeyError(f"{'.'.join(parts[: i + 1])}: no such key")
                    node[part] = {}
                node = node[part]
        else:
            raise KeyError(f"{'.'.join(parts[:i])} is a value, not a section")


def unprefixed(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of `row` whose keys start with `prefix`, keys without it:
    unprefixed({"test/kl": 1, "train/kl": 2}, "test/") -> {"kl": 1}."""
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": [1, 2]}} -> {"a.b.0": 1, "a.b.1": 2}."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
