"""The spec reference (docs/spec-reference.md), generated from schemas/spec.v1.json.

    python -m engine.docs.reference > docs/spec-reference.md

One section per object of the spec, a table of its keys (type, required, default, what it
does). An object reached twice through the same `$ref` (a VM entry's overrides) links to its
first section instead of repeating it. A key without a description is an error: the schema is
what editors show, so it must explain every key.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

Node = dict[str, Any]


class UndocumentedError(ValueError):
    pass


def load_schema() -> Node:
    text = resources.files("engine").joinpath("schemas/spec.v1.json").read_text()
    data: Node = json.loads(text)
    return data


@dataclass
class _Writer:
    root: Node
    sections: list[str] = field(default_factory=list)
    first_seen: dict[str, str] = field(default_factory=dict)  # object's shape → section path

    def resolve(self, node: Node) -> tuple[Node, str | None]:
        ref = node.get("$ref")
        if not ref:
            return node, None
        target: Any = self.root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        inner, _ = self.resolve(target)  # a $ref to a $ref
        merged = {**inner, **{k: v for k, v in node.items() if k != "$ref"}}
        return merged, ref

    def type_of(self, node: Node) -> str:
        node, _ = self.resolve(node)
        if "const" in node:
            return f"`{json.dumps(node['const'])}`"
        if "enum" in node:
            return " \\| ".join(f"`{v}`" for v in node["enum"])
        if "oneOf" in node:
            return " or ".join(self.type_of(v) for v in node["oneOf"])
        kind = node.get("type")
        if kind == "array":
            return f"list of {self.type_of(node.get('items') or {})}"
        if kind == "object" and isinstance(node.get("additionalProperties"), dict):
            return f"map of name → {self.type_of(node['additionalProperties'])}"
        return str(kind or "object")

    def constraints(self, node: Node) -> str:
        node, _ = self.resolve(node)
        parts = []
        if "pattern" in node:
            parts.append(f"pattern `{node['pattern']}`")
        if "minimum" in node and "maximum" in node:
            parts.append(f"{node['minimum']} to {node['maximum']}")
        elif "minimum" in node:
            parts.append(f"≥ {node['minimum']}")
        if node.get("minItems"):
            parts.append(f"at least {node['minItems']}")
        if node.get("uniqueItems"):
            parts.append("no duplicates")
        if node.get("maxLength"):
            parts.append(f"at most {node['maxLength']} characters")
        return f" ({'; '.join(parts)})" if parts else ""

    def section(self, path: str, node: Node, description: str) -> None:
        node, _ = self.resolve(node)
        props: dict[str, Node] = node.get("properties") or {}
        required = set(node.get("required") or [])
        lines = [f"## `{path}`" if path else "## Top level", "", description, ""]
        lines += ["| key | type | required | default | description |", "|-|-|-|-|-|"]
        nested: list[tuple[str, Node, str]] = []
        for key, child in props.items():
            child_path = f"{path}.{key}" if path else key
            text = self.describe(child_path, child)
            link = self.nested(child_path, child, text, nested)
            resolved, _ = self.resolve(child)
            default = f"`{json.dumps(resolved['default'])}`" if "default" in resolved else ""
            lines.append(
                f"| `{key}` | {self.type_of(child)} | {'yes' if key in required else ''} "
                f"| {default} | {_cell(text)}{self.constraints(child)}{link} |"
            )
        self.sections.append("\n".join(lines) + "\n")
        for child_path, child, text in nested:
            self.section(child_path, child, text)

    def describe(self, path: str, node: Node) -> str:
        text = node.get("description") or self.resolve(node)[0].get("description")
        if not text:
            raise UndocumentedError(f"{path} has no description in the schema")
        return str(text)

    def nested(self, path: str, node: Node, text: str, out: list[tuple[str, Node, str]]) -> str:
        """Queue the section of an object-valued key (or of a map's / list's values); returns
        a link to it."""
        resolved, _ = self.resolve(node)
        inner = resolved
        suffix = ""
        if resolved.get("type") == "array":
            inner, _ = self.resolve(resolved.get("items") or {})
            suffix = "[]"
        elif isinstance(resolved.get("additionalProperties"), dict):
            inner, _ = self.resolve(resolved["additionalProperties"])
            suffix = ".<name>"
        elif "oneOf" in resolved:
            objects = [v for v in resolved["oneOf"] if v.get("properties")]
            inner = objects[0] if objects else {}
        if not inner.get("properties"):
            return ""
        key = json.dumps({k: v for k, v in inner.items() if k != "description"}, sort_keys=True)
        if key in self.first_seen:
            seen = self.first_seen[key]
            return f" See [`{seen}`](#{_anchor(seen)})."
        target = path + suffix
        self.first_seen[key] = target
        out.append((target, inner, text))
        return f" See [`{target}`](#{_anchor(target)})."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(path: str) -> str:
    """GitHub's heading anchor of "## `path`"."""
    return "".join(c for c in path.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def render(schema: Node | None = None) -> str:
    schema = schema or load_schema()
    writer = _Writer(schema)
    head = [
        "<!-- Generated from schemas/spec.v1.json by `python -m engine.docs.reference`: do not",
        "     edit; a test fails when this file is stale. -->",
        "",
        f"# {schema['title']}",
        "",
        str(schema.get("description", "")),
        "",
        "Every error in a spec is reported with its file:line:col and JSON path by "
        "`ferry validate`. Editors that speak JSON Schema can use `schemas/spec.v1.json` "
        "directly (e.g. a `# yaml-language-server: $schema=...` line).",
        "",
        "Annotated examples: `examples/specs/` (one per mode).",
        "",
    ]
    writer.section("", schema, "The spec file. Keys not listed in a table are refused.")
    return "\n".join(head) + "\n" + "\n".join(writer.sections)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
