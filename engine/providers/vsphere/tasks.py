"""Waiting for vSphere tasks by polling only info.state / info.error / info.result through the
PropertyCollector (pyVmomi's WaitForTask reads info.entity, which some servers fill wrongly)."""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim, vmodl

from engine.errors import VSphereError
from engine.providers.vsphere.read import collect

_PATHS = ["info.state", "info.error", "info.result", "info.descriptionId"]


def _task_props(si: Any, task: Any) -> dict[str, Any]:
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.Task, pathSet=_PATHS)],
    )
    objects = collect(si, [spec])
    return objects[0].props if objects else {}


def describe_fault(error: Any) -> str:
    """One line for a task's LocalizedMethodFault: its type, message and the file it names."""
    fault = getattr(error, "fault", error)
    parts = [type(fault).__name__]
    message = getattr(error, "localizedMessage", None) or getattr(fault, "msg", None)
    if message and not message.startswith("*types."):
        parts.append(message)
    if getattr(fault, "file", None):
        parts.append(f"({fault.file})")
    return " ".join(parts)


def wait_task(si: Any, task: Any, what: str, timeout: float = 600.0) -> Any:
    """Wait for `task`; return its result, or raise the task's fault as VSphereError (chained)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        props = _task_props(si, task)
        state = props.get("info.state")
        if state == vim.TaskInfo.State.success:
            return props.get("info.result")
        if state == vim.TaskInfo.State.error:
            raise VSphereError(f"{what} failed: {describe_fault(props.get('info.error'))}")
        if time.monotonic() > deadline:
            raise VSphereError(f"{what} did not finish within {timeout:.0f} s (state {state})")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
