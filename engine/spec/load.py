"""Loading a YAML migration spec with the line and column of every key and value.

YAML is composed into nodes (never executed: safe tags only), then built into plain data while
recording marks, so every later problem can point at its place in the file. Duplicate keys, which
YAML parsers silently resolve, are reported. Timestamps stay strings (JSON has no dates).
`${NAME}` in a string is replaced by the environment variable NAME; an unset one is an error.
A value that is exactly one `${NAME}` whose text is an integer or true/false takes that type, so
`port: ${FERRY_VCENTER_PORT}` is a number.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.diagnostics import Diagnostic, Location, Path, Severity

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class Loaded:
    """A loaded document: its data, where each value (and each mapping key) is, and problems."""

    file: str
    data: Any = None
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    unresolved: set[Path] = field(default_factory=set)  # values with an unset ${NAME}

    def where(self, path: Path, *, key: bool = False) -> Location | None:
        """The location of `path`, or of its nearest ancestor that has one."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return None

    def error(self, summary: str, path: Path, *, key: bool = False) -> None:
        self.diagnostics.append(
            Diagnostic(Severity.ERROR, summary, self.where(path, key=key), path)
        )


def _location(file: str, mark: Any) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def load_text(text: str, file: str, env: dict[str, str] | None = None) -> Loaded:
    """Parse `text`; problems go to `.diagnostics` (never raised)."""
    loaded = Loaded(file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        loaded.data = _build(loaded, loader, node, (), os.environ if env is None else env)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _location(file, mark) if mark else None
        problem = f"{exc.context + ': ' if exc.context else ''}{exc.problem}"
        if "'\\t'" in problem:
            problem += " (indent with spaces, not tabs)"
        loaded.diagnostics.append(Diagnostic(Severity.ERROR, f"invalid YAML: {problem}", where))
        loaded.data = None
    except yaml.YAMLError as exc:
        loaded.diagnostics.append(Diagnostic(Severity.ERROR, f"invalid YAML: {exc}"))
        loaded.data = None
    finally:
        loader.dispose()
    return loaded


def _build(loaded: Loaded, loader: _Loader, node: Any, path: Path, env: Any) -> Any:
    if node is None:
        return None
    loaded.values[path] = _location(loaded.file, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(loaded, loader, node, path, env)
    if isinstance(node, yaml.SequenceNode):
        return [_build(loaded, loader, item, (*path, i), env) for i, item in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str):
        return _interpolate(loaded, value, path, env)
    if isinstance(value, bytes):
        loaded.error("binary values are not allowed", path)
        loaded.unresolved.add(path)  # its type is not reported again
        return None
    return value


def _build_mapping(loaded: Loaded, loader: _Loader, node: Any, path: Path, env: Any) -> Any:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        key_path = (*path, str(key))
        if not isinstance(key, str):
            loaded.values[key_path] = _location(loaded.file, key_node.start_mark)
            loaded.error(f"keys must be strings, not {type(key).__name__} {key!r}", key_path)
            continue
        if key in out:
            loaded.keys[key_path] = _location(loaded.file, key_node.start_mark)
            loaded.error(f"duplicate key {key!r}", key_path, key=True)
            continue
        loaded.keys[key_path] = _location(loaded.file, key_node.start_mark)
        out[key] = _build(loaded, loader, value_node, key_path, env)
    return out


def _interpolate(loaded: Loaded, value: str, path: Path, env: Any) -> str | int | bool:
    whole = _ENV.fullmatch(value)
    if whole and whole.group(1) in env:
        text = str(env[whole.group(1)]).strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if text in ("true", "false"):
            return text == "true"
    return _substitute(loaded, value, path, env)


def _substitute(loaded: Loaded, value: str, path: Path, env: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            loaded.error(f"environment variable {name} is not set", path)
            loaded.unresolved.add(path)
            return match.group(0)
        return str(env[name])

    return _ENV.sub(replace, value)
