"""Reading vCenter: inventory in one PropertyCollector pass, and changed block tracking queries.

Each read is split into a fetch (the I/O) and a pure ``parse_*`` over what was fetched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from engine.dataplane.cbt import Extent, merge_extents
from engine.errors import ChangeTrackingError, VSphereError
from engine.providers.vsphere.session import renew_session

log = logging.getLogger("ferry.vsphere")


@dataclass(frozen=True)
class ObjectProps:
    """One managed object's properties as retrieved: unset properties are absent from `props`."""

    ref: Any
    props: dict[str, Any]


def retrieve(si: Any, obj_type: Any, paths: Sequence[str]) -> list[ObjectProps]:
    """All objects of `obj_type` under the root folder with `paths`, in one collector pass.

    Uses a ContainerView and RetrievePropertiesEx (continued while the server pages), never
    per-object property access (collect_in_view). Raises VSphereError."""
    pc = vmodl.query.PropertyCollector
    propset = [pc.PropertySpec(type=obj_type, pathSet=list(paths))]
    try:
        return collect_in_view(si, [obj_type], propset)
    except vmodl.MethodFault as exc:
        raise VSphereError(f"inventory read failed: {exc.msg or type(exc).__name__}") from exc


def view_spec(view: Any, propset: Sequence[Any]) -> Any:
    """The FilterSpec of `propset` (PropertySpecs) over every object of the ContainerView
    `view`."""
    pc = vmodl.query.PropertyCollector
    return pc.FilterSpec(
        objectSet=[
            pc.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    pc.TraversalSpec(
                        name="view", path="view", skip=False, type=vim.view.ContainerView
                    )
                ],
            )
        ],
        propSet=list(propset),
    )


def collect_in_view(
    si: Any, types: Sequence[Any], propset: Sequence[Any], page_size: int = 500
) -> list[ObjectProps]:
    """`collect` of `propset` over a ContainerView of `types` under the root folder, the view
    made for each attempt and destroyed after it: a view belongs to the session that made it,
    so when vCenter ended the session (or another thread logged in again) the read after the
    re-login goes through a new view (break-it 15c F-A: it went through the old one, vCenter
    had dropped it, and its Destroy raised ManagedObjectNotFound: a traceback in `plan`).
    Raises VSphereError as `collect` does; pyVmomi's faults of the calls pass through."""
    content = si.RetrieveContent()

    def read() -> list[Any] | None:
        view = content.viewManager.CreateContainerView(content.rootFolder, list(types), True)
        try:
            spec = view_spec(view, propset)
            return _retrieve_pages(si, [spec], page_size, content.propertyCollector)
        except vmodl.fault.ManagedObjectNotFound as exc:
            if getattr(exc.obj, "_moId", None) != view._moId:
                raise
            return None  # the view went with a session ended since it was made
        finally:
            with suppress(vmodl.fault.ManagedObjectNotFound, vim.fault.NotAuthenticated):
                view.Destroy()  # gone already when the session that made it ended

    return _collected(si, read)


def collect(
    si: Any, specs: Sequence[Any], page_size: int = 500, *, collector: Any = None
) -> list[ObjectProps]:
    """Every PropertyCollector read ferry makes of explicit objects: RetrievePropertiesEx of
    `specs` (FilterSpecs), continued while the server pages (`page_size` objects a page),
    parsed by `parse_object_contents`. `collector`: the session's PropertyCollector when the
    caller has the ServiceContent already (else read: one more round trip). A read through a
    ContainerView is `collect_in_view`'s.

    vCenter answers a read on a session it ended with HTTP 200 and every property in
    `missingSet` with a NotAuthenticated fault, no SOAP fault, so pyVmomi's stub does not log
    in again (vcsim does the same, property_collector.go `retrieveResult.add`). Such an answer
    is never read as "unset": the session is logged in again (`session.renew_session`, as the
    https reader's cookie keeper does) and the read made once more. Raises VSphereError when
    the second answer is still not authenticated or the login fails, and as
    `parse_object_contents` does; pyVmomi's faults of the call itself pass through.
    """
    return _collected(si, lambda: _retrieve_pages(si, specs, page_size, collector))


def _collected(si: Any, read: Callable[[], list[Any] | None]) -> list[ObjectProps]:
    """The objects `read` returns (None: its view was gone), read once more after logging in
    again when vCenter answered as not authenticated, or after a view that was gone; parsed.
    Raises VSphereError (see `collect`)."""
    contents = read()
    if contents is not None and _lost_session(contents):
        log.warning("vCenter answered a property read as not authenticated: logging in again")
        try:
            renew_session(si)
        except vmodl.MethodFault as exc:
            raise VSphereError(
                f"vCenter ended ferry's session and logging in again failed: "
                f"{getattr(exc, 'msg', '') or type(exc).__name__}"
            ) from exc
        contents = None
    if contents is None:
        contents = read()
    if contents is None or _lost_session(contents):
        raise VSphereError(
            "vCenter still answers property reads as not authenticated after ferry logged "
            "in again (NotAuthenticated in missingSet, or a view of the ended session gone)"
        )
    return parse_object_contents(contents)


def _retrieve_pages(si: Any, specs: Sequence[Any], page_size: int, collector: Any) -> list[Any]:
    collector = collector or si.RetrieveContent().propertyCollector
    options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page_size)
    result = collector.RetrievePropertiesEx(list(specs), options)
    objects: list[Any] = []
    while result is not None:
        objects.extend(result.objects or [])
        if not result.token:
            break
        result = collector.ContinueRetrievePropertiesEx(result.token)
    return objects


def _fault_of(missing: Any) -> Any:
    """The MethodFault of a MissingProperty (pyVmomi wraps it in a LocalizedMethodFault)."""
    return getattr(missing.fault, "fault", None) or missing.fault


def _lost_session(contents: Iterable[Any]) -> bool:
    return any(
        isinstance(_fault_of(m), vim.fault.NotAuthenticated)
        for c in contents
        for m in (c.missingSet or [])
    )


def parse_object_contents(contents: Iterable[Any]) -> list[ObjectProps]:
    """Pure: ObjectContent list → ObjectProps (unset properties simply absent).

    A property in `missingSet` is not unset but unread: raises VSphereError naming the object,
    the property and the fault (NotAuthenticated included; `collect` logs in again first). An
    object vCenter no longer has (ManagedObjectNotFound: a VM deleted while the inventory was
    read) is left out, as a read a moment later would not list it.
    """
    objects = []
    for c in contents:
        faults = [_fault_of(m) for m in c.missingSet or []]
        if any(isinstance(f, vmodl.fault.ManagedObjectNotFound) for f in faults):
            continue
        for missing in c.missingSet or []:
            raise VSphereError(
                f"vCenter could not read {missing.path} of {getattr(c.obj, '_moId', c.obj)}: "
                f"{_describe(_fault_of(missing))}"
            )
        objects.append(ObjectProps(ref=c.obj, props={p.name: p.val for p in (c.propSet or [])}))
    return objects


def _describe(fault: Any) -> str:
    name = type(fault).__name__.rsplit(".", 1)[-1]
    message = getattr(fault, "msg", None)
    return f"{name}: {message}" if message else name


def parse_change_info(info: Any) -> tuple[int, int, list[Extent]]:
    """Pure: a DiskChangeInfo → (startOffset, length, [(start, length), ...])."""
    areas = [(int(a.start), int(a.length)) for a in (info.changedArea or [])]
    return int(info.startOffset), int(info.length), areas


def changed_areas(
    vm: Any, snapshot: Any, device_key: int, capacity: int, change_id: str
) -> list[Extent]:
    """Every area of disk `device_key` at `snapshot` changed since `change_id` ("*": allocated),
    merged into sorted, disjoint extents.

    vSphere answers in windows; this loops from offset 0 until the window reaches `capacity`
    (an empty window is not the end) and merges areas split at window ends. A fault means the
    changeId cannot be trusted: ChangeTrackingError, and the caller copies the disk in full.
    """
    areas: list[Extent] = []
    offset = 0
    while offset < capacity:
        try:
            info = vm.QueryChangedDiskAreas(snapshot, device_key, offset, change_id)
        except (vim.fault.FileFault, vmodl.fault.InvalidArgument, vim.fault.NotFound) as exc:
            raise ChangeTrackingError(
                f"changed block query for disk {device_key} from {change_id!r} at offset {offset} "
                f"faulted ({type(exc).__name__}): a full copy is needed"
            ) from exc
        except vmodl.MethodFault as exc:
            raise VSphereError(
                f"QueryChangedDiskAreas failed: {exc.msg or type(exc).__name__}"
            ) from exc
        start, length, window = parse_change_info(info)
        if start != offset or length <= 0:
            raise VSphereError(
                f"QueryChangedDiskAreas answered window ({start}, {length}) for offset {offset}"
            )
        areas.extend(window)
        offset = start + length
    return merge_extents(areas)


def fetch_property(si: Any, obj: Any, path: str) -> Any:
    """One property of one object in one PropertyCollector call (`collect`); None when unset
    (absent). Raises VSphereError when the object no longer exists, and as `collect` does."""
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=obj)],
        propSet=[pc.PropertySpec(type=type(obj), pathSet=[path])],
    )
    try:
        objects = collect(si, [spec])
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise VSphereError(f"{obj._moId} no longer exists") from exc
    return objects[0].props.get(path) if objects else None
