"""Reading vCenter: inventory in one PropertyCollector pass, and changed block tracking queries.

Each read is split into a fetch (the I/O) and a pure ``parse_*`` over what was fetched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from engine.dataplane.cbt import Extent, merge_extents
from engine.errors import ChangeTrackingError, VSphereError


@dataclass(frozen=True)
class ObjectProps:
    """One managed object's properties as retrieved: unset properties are absent from `props`."""

    ref: Any
    props: dict[str, Any]


def retrieve(si: Any, obj_type: Any, paths: Sequence[str]) -> list[ObjectProps]:
    """All objects of `obj_type` under the root folder with `paths`, in one collector pass.

    Uses a ContainerView and RetrievePropertiesEx (continued while the server pages), never
    per-object property access.
    """
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [obj_type], True)
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[
                vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        vmodl.query.PropertyCollector.TraversalSpec(
                            name="view", path="view", skip=False, type=vim.view.ContainerView
                        )
                    ],
                )
            ],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(type=obj_type, pathSet=list(paths))
            ],
        )
        return parse_object_contents(retrieve_all(content.propertyCollector, spec))
    except vmodl.MethodFault as exc:
        raise VSphereError(f"inventory read failed: {exc.msg or type(exc).__name__}") from exc
    finally:
        view.Destroy()


def retrieve_all(collector: Any, spec: Any, page_size: int = 500) -> list[Any]:
    """RetrievePropertiesEx, continued while the server pages its answer."""
    options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page_size)
    result = collector.RetrievePropertiesEx([spec], options)
    objects: list[Any] = []
    while result is not None:
        objects.extend(result.objects or [])
        if not result.token:
            break
        result = collector.ContinueRetrievePropertiesEx(result.token)
    return objects


def parse_object_contents(contents: Iterable[Any]) -> list[ObjectProps]:
    """Pure: ObjectContent list → ObjectProps (missing properties simply absent)."""
    return [
        ObjectProps(ref=c.obj, props={p.name: p.val for p in (c.propSet or [])}) for c in contents
    ]


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
    """One property of one object in one PropertyCollector call; None when unset (absent)."""
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=obj)],
        propSet=[pc.PropertySpec(type=type(obj), pathSet=[path])],
    )
    try:
        contents = si.RetrieveContent().propertyCollector.RetrieveContents([spec])
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise VSphereError(f"{obj._moId} no longer exists") from exc
    props = contents[0].propSet if contents else []
    return props[0].val if props else None
