"""A plan's action graph as Graphviz DOT or Mermaid text (pure)."""

from __future__ import annotations

import json

from engine.model.plan import SYMBOLS, Action, Plan

COLORS = {
    Action.CREATE: "darkgreen",
    Action.UPDATE: "goldenrod",
    Action.DELETE: "red3",
    Action.REPLACE: "purple",
    Action.READ: "steelblue",
    Action.FORGET: "gray40",
    Action.MOVE: "steelblue",
    Action.VERIFY: "teal",
}


def _nodes(plan: Plan) -> list[tuple[str, Action, str]]:
    """(address, action, label) of every change that does something, in plan order."""
    return [
        (c.address, c.action, f"{SYMBOLS[c.action]} {c.address}")
        for c in plan.changes
        if c.action is not Action.NOOP
    ]


def to_dot(plan: Plan) -> str:
    lines = ["digraph plan {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
    for address, action, label in _nodes(plan):
        lines.append(
            f"  {json.dumps(address)} [label={json.dumps(label)}, "
            f"color={COLORS.get(action, 'black')}];"
        )
    lines += [f"  {json.dumps(u)} -> {json.dumps(v)};" for u, v in plan.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(plan: Plan) -> str:
    ids = {address: f"n{i}" for i, (address, _, _) in enumerate(_nodes(plan))}
    lines = ["flowchart LR"]
    for address, action, label in _nodes(plan):
        text = label.replace('"', "#quot;")
        lines.append(f'  {ids[address]}["{text}"]:::{action.value.replace("-", "_")}')
    lines += [f"  {ids[u]} --> {ids[v]}" for u, v in plan.edges if u in ids and v in ids]
    lines += [
        f"  classDef {a.value.replace('-', '_')} stroke:{COLORS[a]},stroke-width:2px"
        for a in COLORS
    ]
    return "\n".join(lines) + "\n"
