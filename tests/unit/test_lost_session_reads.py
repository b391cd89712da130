"""Property reads on a session vCenter ended (break 15b, N1): vCenter answers RetrieveProperties(Ex)
with HTTP 200 and every property in missingSet with NotAuthenticated, no SOAP fault, so pyVmomi
never logs in again. Every PropertyCollector read ferry makes (`read.collect`: fetch_property,
retrieve, the inventory, task waits) logs in again once and reads again, and never reads such
an answer, or any other per-property fault, as "unset". An in-repo fake of pyVmomi's
session-oriented stub stands in for vCenter; the ObjectContents are pyVmomi's own types."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pyVmomi import vim, vmodl

from engine.errors import VSphereError
from engine.providers.vsphere.inventory import fetch_inventory
from engine.providers.vsphere.read import collect, fetch_property, retrieve
from engine.providers.vsphere.tasks import wait_task

PC = vmodl.query.PropertyCollector
VM = vim.VirtualMachine("vm-43")
TASK = vim.Task("task-7")


def missing(path: str, fault: vmodl.MethodFault) -> Any:
    return PC.MissingProperty(path=path, fault=vmodl.LocalizedMethodFault(fault=fault))


class FakeVCenter:
    """A session-oriented stub, its session manager and property collector. `end()` ends the
    session: vCenter then reads currentSession as None and answers every property in missingSet
    with NotAuthenticated; the next call after _SetStateUnauthenticated logs in anew. `stuck`
    keeps answering NotAuthenticated after a login; `props` is what a live session reads."""

    def __init__(self, props: dict[str, Any], obj: Any = VM) -> None:
        self.props = props
        self.obj = obj
        self.logins = 1
        self.active = True
        self.unauthenticated = False
        self.stuck = False
        self.reads = 0

    def end(self) -> None:
        self.active = False

    def _SetStateUnauthenticated(self) -> None:  # noqa: N802 - pyVmomi's name
        self.unauthenticated = True

    @property
    def currentSession(self) -> object | None:  # noqa: N802 - pyVmomi's name
        if self.unauthenticated:  # the stub's re-login
            self.logins += 1
            self.active, self.unauthenticated = not self.stuck, False
        return object() if self.active else None

    def RetrievePropertiesEx(self, specs: list[Any], options: Any) -> Any:  # noqa: N802
        self.reads += 1
        paths = [p for spec in specs for prop in spec.propSet for p in prop.pathSet]
        if not self.active:
            lost = [
                missing(p, vim.fault.NotAuthenticated(privilegeId="System.Read")) for p in paths
            ]
            return PC.RetrieveResult(objects=[PC.ObjectContent(obj=self.obj, missingSet=lost)])
        found = [vmodl.DynamicProperty(name=p, val=self.props[p]) for p in paths if p in self.props]
        return PC.RetrieveResult(objects=[PC.ObjectContent(obj=self.obj, propSet=found)])

    def InvokeMethod(self, mo: Any, info: Any, args: Any) -> None:  # noqa: N802 - pyVmomi's name
        assert info.name == "Destroy", info.name  # the only call made on the container view

    def RetrieveContent(self) -> Any:  # noqa: N802 - pyVmomi's name
        view = vim.view.ContainerView("session[52a0]view-1", self)
        return SimpleNamespace(
            propertyCollector=self,
            viewManager=SimpleNamespace(CreateContainerView=lambda *_: view),
            rootFolder=None,
        )

    def si(self) -> SimpleNamespace:
        return SimpleNamespace(
            _stub=self,
            content=SimpleNamespace(sessionManager=self),
            RetrieveContent=self.RetrieveContent,
        )


def test_a_power_state_read_on_an_ended_session_logs_in_again_and_reads_the_answer() -> None:
    """Repro A: the graceful-shutdown poll read "unset" and powered production back on."""
    vc = FakeVCenter({"runtime.powerState": "poweredOff"})
    vc.end()
    assert fetch_property(vc.si(), VM, "runtime.powerState") == "poweredOff"
    assert (vc.logins, vc.reads) == (2, 2)
    # a live session reads once, logs in never
    assert fetch_property(vc.si(), VM, "runtime.powerState") == "poweredOff"
    assert (vc.logins, vc.reads) == (2, 3)


def test_a_session_still_not_authenticated_after_the_login_is_an_error_not_unset() -> None:
    vc = FakeVCenter({"snapshot": "tree"})
    vc.end()
    vc.stuck = True
    with pytest.raises(VSphereError, match="still answers property reads as not authenticated"):
        fetch_property(vc.si(), VM, "snapshot")
    assert (vc.logins, vc.reads) == (2, 2)  # one login, one read again: no loop


def test_a_task_wait_on_an_ended_session_sees_the_task_finish() -> None:
    """Repro C: the wait read "state None" for 600 s and failed a VM whose task had finished."""
    vc = FakeVCenter({"info.state": "success", "info.result": "snapshot-80"}, obj=TASK)
    vc.end()
    assert wait_task(vc.si(), TASK, "removing snapshot snapshot-80", timeout=1) == "snapshot-80"
    assert vc.logins == 2


def test_the_inventory_and_retrieve_log_in_again_too() -> None:
    vc = FakeVCenter({"name": "db01"})
    vc.end()
    assert [o.props for o in retrieve(vc.si(), vim.VirtualMachine, ["name"])] == [{"name": "db01"}]
    vc.end()
    assert [o.props.get("name") for o in fetch_inventory(vc.si())] == ["db01"]
    assert vc.logins == 3


def test_another_fault_on_a_property_names_it_and_does_not_log_in() -> None:
    contents = [
        PC.ObjectContent(
            obj=VM,
            propSet=[vmodl.DynamicProperty(name="name", val="db01")],
            missingSet=[missing("snapshot", vim.fault.NoPermission(msg="no System.Read"))],
        )
    ]
    vc = FakeVCenter({})
    vc.RetrievePropertiesEx = lambda *_: PC.RetrieveResult(objects=contents)  # type: ignore[method-assign]
    with pytest.raises(
        VSphereError,
        match=r"^vCenter could not read snapshot of vm-43: NoPermission: no System.Read$",
    ):
        collect(vc.si(), [])
    assert vc.logins == 1


def test_a_property_genuinely_unset_stays_absent() -> None:
    vc = FakeVCenter({"name": "db01"})
    assert fetch_property(vc.si(), VM, "snapshot") is None
    assert vc.logins == 1


def test_an_object_deleted_during_the_read_is_left_out() -> None:
    """A VM deleted while the inventory is read (ManagedObjectNotFound on its properties) is
    not in the answer, as a read a moment later would not list it; the others are."""
    gone = vim.VirtualMachine("vm-44")
    contents = [
        PC.ObjectContent(
            obj=gone,
            missingSet=[missing("name", vmodl.fault.ManagedObjectNotFound(obj=gone))],
        ),
        PC.ObjectContent(obj=VM, propSet=[vmodl.DynamicProperty(name="name", val="db01")]),
    ]
    vc = FakeVCenter({})
    vc.RetrievePropertiesEx = lambda *_: PC.RetrieveResult(objects=contents)  # type: ignore[method-assign]
    assert [o.props for o in collect(vc.si(), [])] == [{"name": "db01"}]


class SessionViews(FakeVCenter):
    """vCenter's ContainerViews belong to the session that made them: once it ended, a read
    through one, or its Destroy, faults ManagedObjectNotFound (break-it 15c F-A)."""

    def __init__(self, props: dict[str, Any]) -> None:
        super().__init__(props)
        self.made: list[str] = []

    def _view(self, *_: Any) -> Any:
        self.made.append(f"session[{self.logins}]view-{len(self.made) + 1}")
        return vim.view.ContainerView(self.made[-1], self)

    def _gone(self, view: Any) -> bool:
        return not view._moId.startswith(f"session[{self.logins}]")

    def RetrievePropertiesEx(self, specs: list[Any], options: Any) -> Any:  # noqa: N802
        view = specs[0].objectSet[0].obj
        if self.active and self._gone(view):
            raise vmodl.fault.ManagedObjectNotFound(obj=view)
        return super().RetrievePropertiesEx(specs, options)

    def InvokeMethod(self, mo: Any, info: Any, args: Any) -> None:  # noqa: N802 - pyVmomi's name
        assert info.name == "Destroy", info.name
        if self._gone(mo):
            raise vmodl.fault.ManagedObjectNotFound(obj=mo)

    def RetrieveContent(self) -> Any:  # noqa: N802 - pyVmomi's name
        return SimpleNamespace(
            propertyCollector=self,
            viewManager=SimpleNamespace(CreateContainerView=self._view),
            rootFolder=None,
        )


def test_after_logging_in_again_the_read_goes_through_a_new_view() -> None:
    """Break-it 15c F-A: the read after the re-login went through the view of the ended
    session, and its Destroy raised ManagedObjectNotFound: a traceback in `ferry plan`."""
    vc = SessionViews({"name": "db01"})
    vc.end()
    assert [o.props for o in retrieve(vc.si(), vim.VirtualMachine, ["name"])] == [{"name": "db01"}]
    assert vc.made == ["session[1]view-1", "session[2]view-2"]
    vc.end()
    assert [o.props.get("name") for o in fetch_inventory(vc.si())] == ["db01"]
    assert vc.logins == 3 and len(vc.made) == 4
